"""A `feature_pipeline` fixture: fresh topics, Redis prefix and offline dir; workers as real subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from feature_stream.backfill import compute_view
from feature_stream.settings import FeatureStreamSettings
from feature_stream.verify import ViewSkew, compare_view
from featurestore.definitions import load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import OnlineKey, RedisOnlineStore
from fti_core.settings import load_settings

from ...waits import wait_for

ROOT = Path(__file__).parents[3]
DEFS_PATH = ROOT / "examples/fraud/features.yaml"


@dataclass
class FeaturePipeline:
    env: dict[str, str]
    settings: FeatureStreamSettings
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    source_topics: list[str] = field(default_factory=list)  # the definitions' sources' topics

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.workers)}.log").open("wb")
        code = "from feature_stream.cli import features; features(['worker'])"
        proc = subprocess.Popen([sys.executable, "-c", code], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def produce(self, messages: Iterable[tuple[bytes | None, bytes]], rate: float | None = None) -> int:
        producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers, "linger.ms": 5})
        t0, n = time.monotonic(), 0
        for key, value in messages:
            producer.produce(self.settings.events_topic, key=key, value=value)
            producer.poll(0)
            n += 1
            if rate and n % 100 == 0 and (ahead := n / rate - (time.monotonic() - t0)) > 0:
                time.sleep(ahead)
        assert producer.flush(30) == 0
        return n

    def caught_up(self) -> bool:
        consumer = Consumer(
            {"bootstrap.servers": self.settings.kafka_bootstrap_servers, "group.id": self.settings.app_id}
        )
        try:
            for topic in (self.settings.events_topic, self.settings.repartition_topic, *self.source_topics):
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                tps = [TopicPartition(topic, p) for p in meta.partitions]
                for tp in consumer.committed(tps, timeout=10):
                    _, high = consumer.get_watermark_offsets(tp, timeout=10)
                    if high > 0 and tp.offset < high:
                        return False
            return True
        finally:
            consumer.close()

    def wait_caught_up(self, timeout: float = 120.0) -> None:
        """Wait until the group has committed every offset of the raw and re-keyed topics,
        seen on two consecutive checks (re-keyed messages are produced while raw ones are read)."""
        consecutive = 0

        def check() -> bool:
            nonlocal consecutive
            for w in self.workers:
                assert w.poll() is None or w.returncode == -signal.SIGKILL, self.logs()
            consecutive = consecutive + 1 if self.caught_up() else 0
            return consecutive >= 2

        wait_for(check, what="the workers to catch up", timeout_s=timeout, poll_s=0.5, details=self.logs)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.log_dir.glob("worker-*.log")))

    def parity(self) -> list[ViewSkew]:
        """Every entity of every view: Redis evaluated at the probe times vs the archive's recomputation."""
        defs = load_definitions(self.settings.definitions_path)
        store = OfflineStore(self.settings.offline_root)
        online = RedisOnlineStore.from_url(self.settings.redis_url.get_secret_value(), self.settings.redis_prefix)
        archive = store.read_archive()
        now = int(time.time() * 1000)
        out = []
        for view in defs.views:
            expected = compute_view(view, archive)
            ents = sorted(expected)
            states = online.read_state([OnlineKey(view.name, view.version, e) for e in ents])
            skew = self.settings.future_skew_ms
            out.append(compare_view(view, expected, dict(zip(ents, states, strict=True)), skew, now))
        return out


@pytest.fixture
def feature_pipeline(
    topic_factory: Callable[..., str],
    redis_prefix: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    redis_url: str,
    unique: Callable[[str], str],
) -> Iterator[Callable[..., FeaturePipeline]]:
    made: list[FeaturePipeline] = []

    def make(partitions: int = 4, definitions: Path = DEFS_PATH, **overrides: str) -> FeaturePipeline:
        app_id = unique("fs-app")
        env = dict(os.environ)
        env.update(
            FTI_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            FTI_REDIS_URL=redis_url,
            FTI_EVENTS_TOPIC=topic_factory("fs-raw", partitions),
            FTI_DLQ_TOPIC=topic_factory("fs-dlq", 1),
            FTI_WORKER_APP_ID=app_id,
            FTI_REDIS_PREFIX=redis_prefix,
            FTI_OFFLINE_STORE_URI=str(tmp_path / "offline"),
            FTI_DEFINITIONS_PATH=str(definitions),
            FTI_EVENTS_TOPIC_PARTITIONS=str(partitions),
            FTI_WORKER_SESSION_TIMEOUT_S="6",
            FTI_WORKER_HEARTBEAT_INTERVAL_S="1",
            FTI_WORKER_COMMIT_INTERVAL_S="0.5",
            FTI_WORKER_LOG_LEVEL="WARNING",
            FTI_WORKER_METRICS_PORT="0",  # several workers on one machine: each its own free port
        )
        env.update(overrides)
        settings = load_settings(FeatureStreamSettings, environ=env)  # what the worker processes will read
        logs = tmp_path / f"logs-{len(made)}"
        logs.mkdir()
        pipe = FeaturePipeline(env, settings, logs)
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        for w in pipe.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
                w.wait(timeout=10)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(pipe.settings.app_id)]
        if mine:
            for fut in admin.delete_topics(mine).values():
                with contextlib.suppress(Exception):
                    fut.result(timeout=30)
