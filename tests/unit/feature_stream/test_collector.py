"""The worker's garbage collector policy: what a tick freezes, and the full collection (when set) that frees cycles."""

from __future__ import annotations

import gc
import logging
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


def test_by_default_no_tick_scans_what_the_worker_holds() -> None:
    """A full collection stops the worker ~4 µs per retained event and found nothing to free in
    live traffic: off unless FTI_WORKER_GC_FULL_INTERVAL_S is set."""
    now = [0.0]
    collector = Collector(clock=lambda: now[0])
    collector.start()
    cycle = _cycle()
    for now[0] in (1.0, 600.0, 86_400.0):
        collector.tick()
    assert cycle() is not None and collector.full_collections == 0


def test_each_full_collection_is_logged_with_what_it_took_and_freed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    collector = Collector(full_every_s=60.0, clock=lambda: now[0])
    collector.start()
    _cycle()
    now[0] = 60.0
    with caplog.at_level(logging.INFO, logger="fti.worker"):
        collector.tick()
    (line,) = [r.getMessage() for r in caplog.records if "full garbage collection" in r.getMessage()]
    assert " ms, " in line and "unreachable objects freed" in line and "FTI_WORKER_GC_FULL_INTERVAL_S=60" in line
    freed = int(line.split(" ms, ")[1].split()[0])
    assert freed >= 2  # the cycle's two objects at least
