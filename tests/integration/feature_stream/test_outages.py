"""Dependency outages: ridden out with nothing lost, or ended with a non-zero status and one line.

Redis here is a private `redis-server` (append-only, fsync always) that the test kills and
starts again, so the shared one the other tests use is never touched.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from featurestore.online import OnlineKey, tail_key
from featurestore.values import to_value
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate

from ...waits import wait_for
from .conftest import FeaturePipeline


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"]  # a kill -9 loses nothing acknowledged
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what="private redis to answer", timeout_s=30)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    root = tmp_path / "redis"
    root.mkdir()
    r = PrivateRedis(root)
    r.start()
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.kill()


def _events(count: int, seed: int) -> list[tuple[bytes | None, bytes]]:
    return [(e.key, e.value) for e in generate(count, SimConfig(seed=seed))]


def _assert_exact(pipe: FeaturePipeline) -> None:
    for skew in pipe.parity():
        assert skew.mismatches == [], (skew.view, skew.mismatches[:10])


def test_worker_rides_out_a_redis_outage_and_loses_nothing(
    feature_pipeline: Callable[..., FeaturePipeline], private_redis: PrivateRedis
) -> None:
    pipe = feature_pipeline(partitions=2, FTI_REDIS_URL=private_redis.url, FTI_WORKER_REDIS_TIMEOUT_S="2")
    worker = pipe.start_worker()
    pipe.produce(_events(3_000, seed=5))
    pipe.wait_caught_up(timeout=120)

    private_redis.kill()
    pipe.produce(_events(3_000, seed=6))  # Kafka keeps taking events while Redis is gone
    wait_for(
        lambda: "redis does not answer" in pipe.logs(),
        what="the worker to notice the outage",
        timeout_s=60,
        details=pipe.logs,
    )
    assert worker.poll() is None, pipe.logs()  # riding it out, not exited

    private_redis.start()
    wait_for(
        lambda: "restarting the worker" in pipe.logs(), what="the worker to restart", timeout_s=60, details=pipe.logs
    )
    pipe.wait_caught_up(timeout=120)
    assert worker.poll() is None
    _assert_exact(pipe)


def test_worker_rides_out_an_unwritable_offline_store(feature_pipeline: Callable[..., FeaturePipeline]) -> None:
    pipe = feature_pipeline(partitions=2)
    worker = pipe.start_worker()
    pipe.produce(_events(2_000, seed=7))
    pipe.wait_caught_up(timeout=120)

    root = Path(pipe.settings.offline_root)
    aside = root.with_name(root.name + ".aside")
    root.rename(aside)
    root.write_bytes(b"")  # a file where the store's directory was: every write fails (even as root)
    pipe.produce(_events(2_000, seed=8))
    wait_for(
        lambda: "offline store" in pipe.logs(), what="the worker to notice the outage", timeout_s=60, details=pipe.logs
    )
    assert worker.poll() is None, pipe.logs()

    root.unlink()
    aside.rename(root)
    wait_for(
        lambda: "restarting the worker" in pipe.logs(), what="the worker to restart", timeout_s=60, details=pipe.logs
    )
    pipe.wait_caught_up(timeout=120)
    _assert_exact(pipe)


def test_an_outage_longer_than_the_limit_ends_the_worker_non_zero(
    feature_pipeline: Callable[..., FeaturePipeline], private_redis: PrivateRedis
) -> None:
    pipe = feature_pipeline(
        partitions=1,
        FTI_REDIS_URL=private_redis.url,
        FTI_WORKER_REDIS_TIMEOUT_S="2",
        FTI_WORKER_OUTAGE_LIMIT_S="3",
    )
    worker = pipe.start_worker()
    pipe.produce(_events(500, seed=9))
    pipe.wait_caught_up(timeout=120)
    private_redis.kill()
    pipe.produce(_events(500, seed=10))
    assert worker.wait(timeout=120) == 75, pipe.logs()
    assert "giving up: redis does not answer" in pipe.logs()


def test_a_failure_that_is_no_outage_ends_the_worker_with_status_1(
    feature_pipeline: Callable[..., FeaturePipeline], tmp_path: Path
) -> None:
    pipe = feature_pipeline(partitions=1, FTI_DEFINITIONS_PATH=str(tmp_path / "missing.yaml"))
    worker = pipe.start_worker()
    assert worker.wait(timeout=120) == 1, pipe.logs()
    lines = [line for line in pipe.logs().splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one clear line, said once: no traceback, no restart
    assert "stopping (exit 1): failed: DefinitionError" in lines[0] and "does not exist" in lines[0]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_sigterm_stops_the_worker_with_status_0_and_kill_9_leaves_no_child(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=1)
    first = pipe.start_worker()
    pipe.produce(_events(200, seed=11))
    pipe.wait_caught_up(timeout=120)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, pipe.logs()

    second = pipe.start_worker()
    wait_for(lambda: bool(_children(second.pid)), what="the worker process", timeout_s=30, details=pipe.logs)
    child = _children(second.pid)[0]
    pipe.kill(second)
    wait_for(lambda: _gone(child), what="the orphaned worker to die", timeout_s=30, details=pipe.logs)


def test_sigterm_under_live_traffic_flushes_what_the_worker_holds_and_stops_without_being_killed(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    """Processed batches stay held until a flush; Faust's stop waits for them. A stop must
    flush them itself, or the worker hangs until the supervisor kills it (it did: 30 s, then
    a SIGKILL, nothing flushed, the partition its own until the session timeout)."""
    # No flush before the stop: whatever the worker processed is still held when it is told to stop.
    pipe = feature_pipeline(partitions=1, FTI_WORKER_FLUSH_INTERVAL_S="600", FTI_WORKER_LOG_LEVEL="INFO")
    worker = pipe.start_worker()
    produced = pipe.produce(_events(300, seed=12))
    produced += pipe.produce([_transaction("stop-probe-card", "stop-probe")])
    online = redis.Redis.from_url(pipe.settings.redis_url.get_secret_value())
    tail = tail_key(pipe.settings.redis_prefix, OnlineKey("card_activity", 1, "stop-probe-card"))
    # One partition: once the last message is online, every message before it was processed.
    wait_for(lambda: bool(online.hexists(tail, "stop-probe")), what="the last event online", timeout_s=120,
             details=pipe.logs)  # fmt: skip
    assert _raw_committed(pipe) == 0  # held, not flushed

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, pipe.logs()
    assert "did not stop within" not in pipe.logs()
    assert "wait_empty" not in pipe.logs()
    assert "partitions assigned: " in pipe.logs()  # an operator sees when a worker is ready
    assert "stopped cleanly" in pipe.logs()
    assert _raw_committed(pipe) == produced  # flushed by the stop, then committed


def _transaction(card: str, event_id: str) -> tuple[bytes, bytes]:
    ev = events_pb2.Event(
        event_id=event_id,
        event_type="transaction",
        entities={"card_id": card, "merchant_id": "stop-probe-merchant"},
        values={"amount": to_value(12.5), "merchant_id": to_value("stop-probe-merchant")},
        schema_version=1,
        source="test",
    )
    ev.event_time.FromMilliseconds(int(time.time() * 1000))
    return card.encode(), ev.SerializeToString()


def _raw_committed(pipe: FeaturePipeline) -> int:
    """The worker group's committed offset of the raw topic's one partition (0: none)."""
    bootstrap = pipe.settings.kafka_bootstrap_servers
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": pipe.settings.app_id})
    try:
        (tp,) = consumer.committed([TopicPartition(pipe.settings.events_topic, 0)], timeout=10)
        return max(tp.offset, 0)
    finally:
        consumer.close()


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # dead, not yet reaped by whoever adopted it
