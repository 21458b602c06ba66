"""`BatchApp` on the real broker: whole fetches reach the handler in order, offsets are
committed only for acked records, and a failing handler stops the worker with its batch unacked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from ...waits import wait_for

HANDLER_APP = """
import asyncio, json, os, sys
from feature_stream.app import _app_config
from feature_stream.batch_consumer import BatchApp
from feature_stream.settings import FeatureStreamSettings
import faust

settings = FeatureStreamSettings()
conf = {**_app_config(settings), **json.loads(os.environ.get("EXTRA_CONF", "{}"))}
app = BatchApp(os.environ["APP_ID"], **conf)
topic = app.topic(os.environ["TOPIC"], key_type=bytes, value_type=bytes)
out = open(os.environ["OUT"], "a")

@app.batch_handler(topic)
async def handle(messages):
    if any(m.value == b"boom" for m in messages):
        raise RuntimeError("handler failed")
    await asyncio.sleep(float(os.environ.get("HANDLER_SLEEP_S", "0")))
    out.write(json.dumps([[m.partition, m.offset] for m in messages]) + "\\n")
    out.flush()
    for m in messages:
        m.incref()
        m.ack(app.consumer)

faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
"""


def _start(env: dict[str, str], app_id: str, topic: str, out: Path, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    child_env = {**env, "APP_ID": app_id, "TOPIC": topic, "OUT": str(out), **extra}
    with log.open("wb") as f:
        return subprocess.Popen([sys.executable, "-c", HANDLER_APP], env=child_env, stdout=f, stderr=subprocess.STDOUT)


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)]
    finally:
        c.close()


def _produce(bootstrap: str, topic: str, messages: list[tuple[int, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for partition, value in messages:
        p.produce(topic, value=value, key=b"k", partition=partition)
    assert p.flush(30) == 0


def _batches_once_committed(
    proc: subprocess.Popen[bytes], bootstrap: str, app_id: str, topic: str, offsets: list[int], out: Path, log: Path
) -> list[list[list[int]]]:
    """Wait until the app has committed `offsets` (per partition), stop it, and return the
    batches its handler wrote, in order."""

    def all_committed() -> bool:
        assert proc.poll() is None, log.read_text()
        return _committed(bootstrap, app_id, topic, len(offsets)) == offsets

    try:
        wait_for(all_committed, what="every offset to be committed", timeout_s=120, poll_s=0.3, details=log.read_text)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _env(kafka_bootstrap: str) -> dict[str, str]:
    return {**os.environ, "FTI_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "FTI_WORKER_COMMIT_INTERVAL_S": "0.2"}


def test_each_fetch_reaches_the_handler_whole_in_offset_order_and_is_committed_once_acked(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic = topic_factory(partitions=2)
    _produce(kafka_bootstrap, topic, [(i % 2, f"v{i}".encode()) for i in range(3000)])
    out, app_id = tmp_path / "batches.jsonl", unique("batch")
    log = tmp_path / "worker.log"
    proc = _start(_env(kafka_bootstrap), app_id, topic, out, log)
    batches = _batches_once_committed(proc, kafka_bootstrap, app_id, topic, [1500, 1500], out, log)
    seen = [tuple(pos) for batch in batches for pos in batch]
    assert sorted(seen) == [(p, o) for p in range(2) for o in range(1500)]  # each record exactly once
    for p in range(2):
        assert [o for q, o in seen if q == p] == list(range(1500))  # in offset order per partition
    # Whole fetches, not one call per record. How many records a fetch holds depends on what
    # the fetcher had buffered when asked (timing), so only "several per call" is asserted.
    assert len(batches) < len(seen) and max(len(batch) for batch in batches) > 1


def test_a_failing_handler_stops_the_worker_and_its_batch_stays_uncommitted(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic = topic_factory(partitions=1)
    app_id = unique("batch")
    _produce(kafka_bootstrap, topic, [(0, b"ok")] * 50 + [(0, b"boom")] + [(0, b"ok")] * 50)
    proc = _start(_env(kafka_bootstrap), app_id, topic, tmp_path / "batches.jsonl", tmp_path / "worker.log")
    try:
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0
    assert "handler failed" in (tmp_path / "worker.log").read_text()
    committed = _committed(kafka_bootstrap, app_id, topic, 1)[0]
    assert committed <= 50  # nothing at or after the failing record was committed


def test_a_long_catch_up_is_not_reported_as_a_stream_that_never_started(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique: Callable[[str], str], tmp_path: Path
) -> None:
    """Faust's livelock check reads when each partition last had a record processed, which its
    stream records; batch handlers bypass the stream, so they record it instead. Without it, a
    catch-up longer than `stream_processing_timeout` logged "Stream has not started processing"
    (ERROR) every 30 s for partitions in progress. The timeout is 1 s here; the catch-up takes
    several (20 records a fetch, 0.2 s a fetch)."""
    topic = topic_factory(partitions=1)  # one: a second could rightly wait its turn past 1 s
    _produce(kafka_bootstrap, topic, [(0, f"v{i}".encode()) for i in range(300)])
    out, app_id, log = tmp_path / "batches.jsonl", unique("batch"), tmp_path / "worker.log"
    extra = json.dumps({"stream_processing_timeout": 1.0, "broker_max_poll_records": 20})
    proc = _start(_env(kafka_bootstrap), app_id, topic, out, log, EXTRA_CONF=extra, HANDLER_SLEEP_S="0.2")
    batches = _batches_once_committed(proc, kafka_bootstrap, app_id, topic, [300], out, log)
    assert len(batches) >= 10  # the catch-up outlasted the timeout many times over
    text = log.read_text()
    assert "has not started processing" not in text and "has stopped processing" not in text, text
