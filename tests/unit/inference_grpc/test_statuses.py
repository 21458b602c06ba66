"""The README's status table is the code's mapping; deadlines and undecodable requests get
their own statuses; repeated warnings are rate-limited."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

import inference_grpc.errors as errors
from featurestore.online import AsyncInMemoryOnlineStore, OnlineKey, OnlineValue
from fti.v1 import inference_pb2
from inference_grpc.errors import DeadlineExceededError, OnlineStoreUnavailableError
from inference_grpc.interceptor import RateLimitedLog

from .models_helper import new_servicer as _servicer

README = Path(__file__).resolve().parents[3] / "README.md"
# Errors that never answer a call, so they have no row.
_NOT_ANSWERED = {"ServerStartError"}


def _status_rows() -> list[tuple[str, str, str]]:
    text = README.read_text()
    table = re.search(r"<!-- statuses:begin -->\n(.*?)<!-- statuses:end -->", text, re.S)
    assert table is not None, "README.md lost its statuses table"
    rows = []
    for line in table.group(1).splitlines()[2:]:  # after the header and its rule
        what, status, raised = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append((what, status.strip("`"), raised.strip("`")))
    return rows


def test_every_row_of_the_readme_status_table_is_what_the_code_answers() -> None:
    rows = _status_rows()
    assert rows, "empty statuses table"
    documented = set()
    for what, status, raised in rows:
        assert status in grpc.StatusCode.__members__, f"{what!r}: {status} is no gRPC status"
        error = getattr(errors, raised, None)
        if error is None:
            assert raised in ("gRPC itself", "any other exception"), f"{what!r}: unknown error {raised!r}"
            continue
        assert error.grpc_status.name == status, f"{what!r}: README says {status}, {raised} answers {error.grpc_status}"
        documented.add(raised)
    assert documented == set(errors.__all__) - _NOT_ANSWERED, "every error a call can get has a row"


def test_rate_limited_log_says_how_many_it_left_out() -> None:
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.ratelimited")
    logger.addHandler(Collect())
    logger.propagate = False
    limited = RateLimitedLog(logger, interval_s=60, clock=lambda: now[0])
    for t in (0, 1, 2, 59.9, 60, 61, 200):
        now[0] = t
        limited.warning("bad request %s", t)
    assert records == [
        "bad request 0",
        "bad request 60 (3 more like it since the last such line)",
        "bad request 200 (1 more like it since the last such line)",
    ]


class Context:
    """A caller's deadline as the server sees it: `time_remaining()` answers from a script."""

    def __init__(self, *remaining: float | None) -> None:
        self._remaining = list(remaining)

    def time_remaining(self) -> float | None:
        return self._remaining.pop(0) if len(self._remaining) > 1 else self._remaining[0]


class NeverAnswers(AsyncInMemoryOnlineStore):
    """A Redis read that never returns (until cancelled): slowness without timing."""

    reads = 0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        self.reads += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


REQUEST = inference_pb2.PredictRequest(entities={"card_id": "c", "merchant_id": "m"})


async def test_a_read_cut_at_the_callers_deadline_is_deadline_exceeded_not_unavailable(tmp_path: Path) -> None:
    # The read gets the caller's 20 ms; when it is cut, gRPC's clock still shows a sliver left
    # (its deadline and the loop's timer are not the same clock). That sliver used to make
    # the call UNAVAILABLE ("Redis timed out") although it was the deadline that ended it.
    store = NeverAnswers()
    servicer = await _servicer(tmp_path, store, redis_timeout_ms=250)
    with pytest.raises(DeadlineExceededError):
        await servicer.Predict(REQUEST, Context(0.02, 0.000_3))
    assert store.reads == 1


async def test_a_read_cut_at_the_store_cap_is_retried_then_unavailable(tmp_path: Path) -> None:
    store = NeverAnswers()
    servicer = await _servicer(tmp_path, store, redis_timeout_ms=20)
    with pytest.raises(OnlineStoreUnavailableError, match="timed out"):
        await servicer.Predict(REQUEST, Context(10.0))
    assert store.reads == 2


async def test_the_retry_is_cut_at_the_deadline_when_that_comes_first(tmp_path: Path) -> None:
    store = NeverAnswers()
    servicer = await _servicer(tmp_path, store, redis_timeout_ms=20)
    # First read capped by the store (20 ms of 1 s); the retry gets the 10 ms still left.
    with pytest.raises(DeadlineExceededError):
        await servicer.Predict(REQUEST, Context(1.0, 0.01, 0.01, 0.000_1))
    assert store.reads == 2
