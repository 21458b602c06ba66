"""The re-keyed topic's record: built in place, it is the `RekeyedBatch` built the plain way."""

from __future__ import annotations

import math
import random

import pytest

from feature_stream.records import ViewItem
from featurestore.values import Scalar, to_value_map
from fti.v1 import rekeyed_pb2
from fti_core.errors import InvalidArgumentError


def _items(rng: random.Random, n: int) -> list[ViewItem]:
    choices: list[Scalar] = [True, False, 0, -(2**63), 2**63 - 1, 0.1, -0.0, 1e300, "", 'é"x', "m0001"]
    out = []
    for i in range(n):
        values = {f"f{j}": rng.choice(choices) for j in range(rng.randrange(4))}
        out.append(
            ViewItem(
                f"v{i % 3}:1", f"k{rng.randrange(50)}", f"e{i}", rng.randrange(2**41), rng.randrange(-1, 2**41), values
            )
        )
    return out


def test_encode_many_is_the_batch_of_to_proto_and_decodes_back() -> None:
    items = _items(random.Random(4), 400)
    data = ViewItem.encode_many(items)
    plain = [
        rekeyed_pb2.RekeyedItem(
            view=i.view_ref,
            entity_key=i.entity_key,
            event_id=i.event_id,
            event_time_ms=i.time_ms,
            watermark_ms=i.watermark_ms,
            values=to_value_map(i.values),
        )
        for i in items
    ]
    assert rekeyed_pb2.RekeyedBatch.FromString(data) == rekeyed_pb2.RekeyedBatch(items=plain)
    back = ViewItem.decode_many(data)
    assert back == items
    for got, want in zip(back, items, strict=True):  # bool stays bool, -0.0 stays -0.0
        assert {k: (type(v), repr(v)) for k, v in got.values.items()} == {
            k: (type(v), repr(v)) for k, v in want.values.items()
        }


@pytest.mark.parametrize("bad", [math.nan, math.inf, object()])
def test_a_value_the_contract_cannot_carry_is_refused(bad: object) -> None:
    item = ViewItem("v:1", "k", "e", 1, 0, {"x": bad})  # type: ignore[dict-item]  # on purpose
    with pytest.raises(InvalidArgumentError):
        ViewItem.encode_many([item])
