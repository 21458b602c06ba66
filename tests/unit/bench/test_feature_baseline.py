"""The feature bench's hand-written baseline computes the card view the worker computes.

The baseline is the denominator of the throughput target, so it must do the same work: the
same dedup, lateness and windows. Demo events (duplicates, out of order, late) go through its
`apply`; its tiles read at each card's newest time equal the batch engine over the events the
same rules accept.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from featurestore.definitions import load_definitions
from featurestore.tiles import Event, evaluate_events
from featurestore.values import from_value_map
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate

ROOT = Path(__file__).parents[3]


def _baseline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_baseline", ROOT / "bench/feature_pipeline/baseline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Msg:
    """The three things the baseline reads of a consumed Kafka message."""

    def __init__(self, key: bytes, value: bytes, ts_ms: int) -> None:
        self._key, self._value, self._ts = key, value, ts_ms

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


def _accepted(msgs: list[_Msg], lateness_ms: int) -> dict[str, list[Event]]:
    """Reference rules: first (type, id) wins; late when time < newest earlier time on the key - lateness."""
    seen: set[tuple[str, str]] = set()
    marks: dict[bytes, int] = {}
    out: dict[str, list[Event]] = {}
    for m in msgs:
        ev = events_pb2.Event.FromString(m.value())
        t = ev.event_time.ToMilliseconds()
        if (ev.event_type, ev.event_id) in seen:
            continue
        seen.add((ev.event_type, ev.event_id))
        mark = marks.get(m.key(), -(2**62))
        marks[m.key()] = max(mark, t)
        if ev.event_type == "transaction" and t >= mark - lateness_ms:
            card = ev.entities["card_id"]
            out.setdefault(card, []).append(Event(t, ev.event_id, from_value_map(ev.values)))
    return out


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def test_baseline_tiles_read_as_the_batch_engine_over_the_accepted_events() -> None:
    view = next(v for v in load_definitions(ROOT / "examples/fraud/features.yaml").views if v.name == "card_activity")
    sim = list(generate(4000, SimConfig(seed=3, cards=60)))
    msgs = [_Msg(e.key, e.value, e.time_ms + 1000) for e in sim]
    base = _baseline().Baseline(view, "unused", redis.Redis())  # never connects: `apply` writes nothing
    dirty: dict[str, Any] = {}
    for m in msgs:
        base.apply(m, dirty)
    expected = _accepted(msgs, view.allowed_lateness_ms)
    assert base.counts["duplicates"] > 0 and base.counts["late"] > 0  # the rules were exercised
    assert set(base.entities) == set(expected)
    for card, events in expected.items():
        events.sort(key=lambda e: e.order)
        t = events[-1].time_ms
        want = evaluate_events(view, events, t)
        got = base.read(card, t)
        assert all(_close(got[k], want[k]) for k in want), (card, got, want)


def test_live_the_baseline_also_writes_each_accepted_events_id_to_its_cards_tail_hash() -> None:
    """What the freshness watcher looks for (`freshness.py --baseline`); not in the catch-up."""
    view = next(v for v in load_definitions(ROOT / "examples/fraud/features.yaml").views if v.name == "card_activity")
    sim = list(generate(300, SimConfig(seed=5, cards=20)))
    msgs = [_Msg(e.key, e.value, e.time_ms + 1000) for e in sim]
    expected = _accepted(msgs, view.allowed_lateness_ms)
    for live in (False, True):
        base = _baseline().Baseline(view, "p", redis.Redis(), live=live)
        dirty: dict[str, Any] = {}
        for m in msgs:
            base.apply(m, dirty)
        tails = {key: set(fields) for key, fields, _ in base.changes(dirty) if ":tail:" in key}
        want = {f"p:tail:card_activity:v1:{card}": {e.event_id for e in events} for card, events in expected.items()}
        assert tails == (want if live else {})


def test_the_floor_writes_every_decoded_events_id_to_its_cards_tail_and_aggregates_nothing() -> None:
    """`--live --floor`: duplicates and late events too, since the floor judges nothing."""
    view = next(v for v in load_definitions(ROOT / "examples/fraud/features.yaml").views if v.name == "card_activity")
    sim = list(generate(300, SimConfig(seed=5, cards=20)))
    msgs = [_Msg(e.key, e.value, e.time_ms + 1000) for e in sim]
    want: dict[str, set[str]] = {}
    for m in msgs:
        ev = events_pb2.Event.FromString(m.value())
        want.setdefault(f"p:tail:card_activity:v1:{ev.entities['card_id']}", set()).add(ev.event_id)
    base = _baseline().Baseline(view, "p", redis.Redis(), live=True, floor=True)
    dirty: dict[str, Any] = {}
    for m in msgs:
        base.apply(m, dirty)
    changes = base.changes(dirty)
    assert {key: set(fields) for key, fields, _ in changes} == want
    assert base.entities == {} and base.counts["aggregated"] == 0
