"""Tail events as stored online: whatever the encoder, `json.loads` reads back exactly the values."""

from __future__ import annotations

import json
import random

from featurestore.online_tiles import decode_tail_event, encode_tail_event
from featurestore.tiles import Event
from featurestore.values import Scalar


def test_values_read_back_bit_for_bit_as_the_standard_library_would_write_them() -> None:
    rng = random.Random(5)
    specials = [0.1, 1e-05, 1e22, -0.0, 5e-324, 1.7976931348623157e308, 123456789.125, 2**53 + 1]
    for i in range(2000):
        x = specials[i] if i < len(specials) else rng.uniform(-1e15, 1e15) * 10.0 ** rng.randrange(-20, 1)
        values: dict[str, Scalar] = {
            "x": x,
            "n": rng.randrange(-(2**62), 2**62),
            "s": rng.choice(["a", 'q"uo\\te', "é", ""]),
            "b": i % 2 == 0,
        }
        event = Event(1_790_000_000_000 + i, f"e{i}", values)
        raw = encode_tail_event(event)
        back = decode_tail_event(event.event_id, raw)
        assert back == event
        assert json.loads(raw) == json.loads(json.dumps([event.time_ms, values]))
        assert repr(back.values["x"]) == repr(x)  # -0.0 stays -0.0


def test_an_integer_beyond_64_bits_is_written_by_the_standard_library() -> None:
    event = Event(7, "big", {"n": 2**70})
    assert decode_tail_event("big", encode_tail_event(event)) == event
