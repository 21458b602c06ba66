"""The re-keyed side lets the event loop run between chunks; an outage's traceback is one line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import redis

from feature_stream import metrics
from feature_stream.app import _rekeyed_chunks, _Summary
from feature_stream.codec import DeadLetter
from feature_stream.health import Health
from feature_stream.log_faults import FaultTracebackFilter
from feature_stream.records import ViewItem
from fti_core.errors import UnavailableError


class _Processor:
    def __init__(self, skip: dict[str, str] | None = None) -> None:
        self.skip = skip or {}
        self.dead: list[tuple[str, str]] = []

    def dead_letter(self, msg: Any, letter: DeadLetter) -> None:
        self.dead.append((msg.position, letter.reason_name))


def _record(offset: int, n: int) -> SimpleNamespace:
    items = [ViewItem("v:1", f"e{offset}-{i}", f"id{offset}-{i}", 1_000 + i, 0, {"x": 1.0}) for i in range(n)]
    return SimpleNamespace(topic="rk", partition=0, offset=offset, key=None, value=ViewItem.encode_many(items))


def test_a_fetch_is_cut_into_runs_of_records_of_about_the_chunk_size() -> None:
    records = [_record(o, 300) for o in range(10)]  # 3,000 items
    chunks = list(_rekeyed_chunks(_Processor(), records, most_items=1_000))  # type: ignore[arg-type]
    assert [len(c) for c, _ in chunks] == [4, 4, 2]  # cut after the record that reaches 1,000
    assert [len(items) for _, items in chunks] == [1_200, 1_200, 600]
    assert [m.offset for c, _ in chunks for m in c] == list(range(10))  # every record once, in order


def test_an_unreadable_or_skipped_record_is_dead_lettered_and_the_rest_go_on() -> None:
    records = [
        _record(0, 2),
        SimpleNamespace(topic="rk", partition=0, offset=1, key=None, value=b"\x07garbage"),
        _record(2, 2),
    ]
    proc = _Processor(skip={"rk/0/2": "by hand"})
    chunks = list(_rekeyed_chunks(proc, records, most_items=10_000))  # type: ignore[arg-type]
    assert [len(items) for _, items in chunks] == [2]
    assert proc.dead == [
        ("rk/0/1", "DEAD_LETTER_REASON_PROCESSING_FAILED"),
        ("rk/0/2", "DEAD_LETTER_REASON_MANUAL"),
    ]


def _record_with(exc: BaseException, msg: str = "Crashed reason=%r") -> logging.LogRecord:
    return logging.LogRecord("faust", logging.ERROR, __file__, 1, msg, (exc,), (type(exc), exc, None))


def test_an_outage_crash_keeps_its_line_and_loses_its_traceback() -> None:
    flt = FaultTracebackFilter()
    outage = UnavailableError("state save failed: Connection refused")
    outage.__cause__ = redis.ConnectionError("Connection refused")
    rec = _record_with(outage)
    assert flt.filter(rec) and rec.exc_info is None
    assert "UnavailableError: state save failed" in rec.getMessage()
    bug = _record_with(KeyError("x"))
    assert flt.filter(bug) and bug.exc_info is not None  # a bug keeps its traceback
    replaced = logging.LogRecord("mode", logging.CRITICAL, __file__, 1, "We experienced a crash! Reraising", (), None)
    assert not flt.filter(replaced)


def test_the_longest_loop_stall_is_reported_once_per_summary() -> None:
    health = Health(live_after_s=60, stall_after_s=60)
    for s in (0.002, 1.5, -0.001, 0.3):
        health.stalled_for(s)
    assert health.take_longest_stall() == 1.5
    assert health.take_longest_stall() == 0.0


def _two_summaries(caplog: Any, level: int, bump: Callable[[], None]) -> tuple[list[str], list[str]]:
    """The lines at `level` of two minute summaries in a row, with `bump()` run before the first."""

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    async def run() -> tuple[list[str], list[str]]:
        summary = _Summary(Health(live_after_s=60, stall_after_s=60))
        summary.EVERY_S = 0.0
        bump()
        summary.maybe_log()
        first = lines()
        caplog.clear()
        summary.maybe_log()
        return first, lines()

    with caplog.at_level(logging.INFO, logger="fti.worker"):
        return asyncio.run(run())


def test_the_minute_summary_says_how_many_messages_were_dead_lettered_and_why(caplog: Any) -> None:
    def bump() -> None:
        metrics.DEAD_LETTERS.labels("WRONG_TYPE").inc(3)
        metrics.DEAD_LETTERS.labels("UNDECODABLE").inc()

    first, second = _two_summaries(caplog, logging.WARNING, bump)
    assert len(first) == 1 and first[0].startswith("4 messages dead-lettered in the last")
    assert first[0].endswith(": WRONG_TYPE 3, UNDECODABLE 1")
    assert second == []  # nothing dead-lettered since: no line


def test_the_minute_summary_says_how_many_entities_and_keys_missed_the_caches(caplog: Any) -> None:
    """A bound too small for the active entities shows as misses in every minute's line."""

    def bump() -> None:
        metrics.CACHE_MISSES.labels("entities").inc(7)
        metrics.CACHE_MISSES.labels("keys").inc(2)

    first, second = _two_summaries(caplog, logging.INFO, bump)
    assert len(first) == 1 and first[0].endswith("cache misses 7 entities and 2 keys")
    assert len(second) == 1 and second[0].endswith("cache misses 0 entities and 0 keys")  # counted once


def test_the_faust_worker_leaves_debug_records_unmade() -> None:
    """Faust's spinner set the root logger to DEBUG: every library debug call built a record."""
    import faust

    from feature_stream.app import _faust_worker

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    app = faust.App("fti-test-spinner", broker="kafka://localhost:1", web_enabled=False)
    try:
        worker = _faust_worker(app, "WARNING")
        worker._setup_logging()
        assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
        assert not [h for h in root.handlers if type(h).__name__ == "SpinnerHandler"]
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
