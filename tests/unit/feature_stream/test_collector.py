"""The worker's garbage collector policy: what a tick freezes, and the full collection that frees cycles anyway."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from feature_stream.collector import YOUNG_THRESHOLD, Collector


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    """A reference cycle nothing else holds: only the cyclic collector frees it."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


def test_a_tick_freezes_what_is_alive_and_only_the_periodic_full_collection_frees_cycles() -> None:
    now = [0.0]
    collector = Collector(full_every_s=600.0, clock=lambda: now[0])
    collector.start()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    cycle = _cycle()
    collector.tick()
    assert gc.get_count()[0] == 0  # freezing resets the young generation's count
    gc.collect()  # frozen objects are out of every collection's reach
    assert cycle() is not None
    now[0] = 599.0
    collector.tick()
    assert cycle() is not None and collector.full_collections == 0
    now[0] = 600.0
    collector.tick()  # the period is over: everything collected, then frozen again
    assert cycle() is None and collector.full_collections == 1
    later = _cycle()
    now[0] = 1199.0
    collector.tick()
    gc.collect()
    assert later() is not None
    now[0] = 1200.0
    collector.tick()
    assert later() is None and collector.full_collections == 2
