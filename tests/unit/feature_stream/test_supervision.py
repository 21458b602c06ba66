"""The supervisor's decisions, the fault classes, the log limit and the health probes, without Kafka."""

from __future__ import annotations

import errno
import io
import logging
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from feature_stream import log_limits, worker_process
from feature_stream.faults import EXIT_DEPENDENCY, EXIT_FAILED, classify
from feature_stream.health import Health, HealthServer
from feature_stream.log_limits import RepeatFilter
from feature_stream.outbox import RDKAFKA_LOG, KafkaOutbox
from feature_stream.settings import FeatureStreamSettings
from feature_stream.supervisor import Backoff, Supervisor
from featurestore.definitions import DefinitionError
from fti_core.errors import UnavailableError

FAST = Backoff(first_s=0.01, most_s=0.05)


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (_wrapped(redis.ConnectionError("refused"), UnavailableError("state load failed")), "redis"),
        (redis.TimeoutError("Timeout reading from socket"), "redis"),
        (UnavailableError("offline store write to x failed: [Errno 20] Not a directory"), "offline store"),
        (OSError(errno.ENOSPC, "No space left on device"), "offline store"),
        (UnavailableError("kafka delivery failed: 3 messages undelivered"), "kafka"),
        (_wrapped(FileNotFoundError(errno.ENOENT, "no such file"), DefinitionError("definitions missing")), None),
        (ValueError("a bug"), None),
    ],
)
def test_faults_blame_the_dependency_or_nothing(exc: BaseException, dependency: str | None) -> None:
    fault = classify(exc)
    assert fault.dependency == dependency
    assert fault.exit_code == (EXIT_DEPENDENCY if dependency else EXIT_FAILED)


def _child(tmp_path: Path, codes: list[int]) -> list[str]:
    """A child that exits with the next of `codes` each time it is started (a file counts the starts)."""
    counter = tmp_path / "starts"
    counter.write_text("0")
    script = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()); p.write_text(str(n + 1))\n"
        f"codes = {codes!r}\n"
        "sys.exit(codes[min(n, len(codes) - 1)])\n"
    )
    return [sys.executable, "-c", script]


def test_a_dependency_fault_is_retried_until_the_probe_answers(tmp_path: Path) -> None:
    answers = iter(["redis does not answer", "redis does not answer", None, None])
    sup = Supervisor(
        _child(tmp_path, [EXIT_DEPENDENCY, EXIT_DEPENDENCY, 0]),
        lambda: next(answers),
        outage_limit_s=60,
        stop_grace_s=5,
        backoff=FAST,
    )
    # The third start exits 0 without being asked to stop: that is a failure too.
    assert sup.run() == EXIT_FAILED
    assert sup.restarts == 2
    assert (tmp_path / "starts").read_text() == "3"


def test_an_outage_past_its_limit_ends_with_status_75(tmp_path: Path) -> None:
    sup = Supervisor(
        _child(tmp_path, [EXIT_DEPENDENCY]),
        lambda: "redis does not answer",
        outage_limit_s=0.2,
        stop_grace_s=5,
        backoff=FAST,
    )
    assert sup.run() == EXIT_DEPENDENCY
    assert sup.restarts == 0


def test_a_worker_that_keeps_failing_while_everything_answers_gives_up(tmp_path: Path) -> None:
    sup = Supervisor(
        _child(tmp_path, [EXIT_DEPENDENCY]), lambda: None, outage_limit_s=0.3, stop_grace_s=5, backoff=FAST
    )
    assert sup.run() == EXIT_DEPENDENCY
    assert sup.restarts >= 1


def test_any_other_failure_is_not_restarted(tmp_path: Path) -> None:
    sup = Supervisor(_child(tmp_path, [3]), lambda: None, outage_limit_s=60, stop_grace_s=5, backoff=FAST)
    assert sup.run() == 3
    assert (tmp_path / "starts").read_text() == "1"


def test_repeated_library_lines_are_limited_with_a_count() -> None:
    flt = RepeatFilter(interval_s=3600)
    records = [logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "Unable connect to %s", ("b:9092",), None)]
    records += [logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "Unable connect to %s", ("b:9092",), None)]
    records += [logging.LogRecord("aiokafka", logging.INFO, __file__, 1, "Unable connect to %s", ("b:9092",), None)]
    assert [flt.filter(r) for r in records] == [True, False, True]
    assert flt.filter(records[0]) and not flt.filter(records[1])  # the same answer for every handler
    flt.interval_s = 0
    later = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "Unable connect to %s", ("b:9092",), None)
    assert flt.filter(later)
    assert later.getMessage() == "Unable connect to b:9092 (1 more like this in the last 0 s)"


def test_librdkafka_lines_go_through_the_workers_repeat_limit(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on: librdkafka logs connection failures
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root, own = logging.getLogger(), logging.getLogger("fti.worker")
    own_before = (list(own.handlers), own.propagate, own.level)
    shown = io.StringIO()
    handler = logging.StreamHandler(shown)
    root.addHandler(handler)
    made: list[logging.LogRecord] = []
    counter = _Count(made)
    RDKAFKA_LOG.addFilter(counter)  # sees every record before any handler does
    flt = log_limits.install(interval_s=3600)
    try:
        worker_process._own_log()  # as in the worker process
        outbox = KafkaOutbox(FeatureStreamSettings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{port}"))
        deadline = time.monotonic() + 30
        while len([r for r in made if r.levelno >= logging.WARNING]) < 4 and time.monotonic() < deadline:
            outbox._producer.poll(0.1)  # log lines are handed over on poll
    finally:
        RDKAFKA_LOG.removeFilter(counter)
        for h in root.handlers:  # pytest's own capture handlers got it too
            h.removeFilter(flt)
        root.removeHandler(handler)
        own.handlers[:], own.propagate, own.level = own_before
    repeated = [r for r in made if r.levelno >= logging.WARNING]
    assert len(repeated) >= 4, "librdkafka logged no repeated failure through Python logging"
    lines = [ln for ln in shown.getvalue().splitlines() if ln.strip()]
    assert 1 <= len(lines) < len(made)  # through the root handler, repeats folded
    assert "rdkafka" not in capfd.readouterr().err  # nothing printed around Python logging


class _Count(logging.Filter):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__()
        self.into = into

    def filter(self, record: logging.LogRecord) -> bool:
        self.into.append(record)
        return True


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_probes_follow_the_event_loop_and_progress() -> None:
    health = Health(live_after_s=3600, stall_after_s=0)
    server = HealthServer(health, "127.0.0.1", 0).start()
    try:
        assert server.port > 0  # port 0: a free one
        assert _get(server.port, "/livez") == 200
        assert _get(server.port, "/readyz") == 503  # no partitions yet
        health.assigned = True
        assert _get(server.port, "/readyz") == 200
        health.lag = 5  # work waits and, with stall_after_s=0, nothing has moved since
        assert _get(server.port, "/readyz") == 503
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        stalled = next(line for line in body.splitlines() if line.startswith("fti_features_stalled_since_seconds "))
        assert float(stalled.split()[1]) > 0
        health.live_after_s = 0
        assert _get(server.port, "/livez") == 503
    finally:
        server.stop()
