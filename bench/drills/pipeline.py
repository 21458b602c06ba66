"""One drill's feature pipeline: its topics, worker, producer, and the figures it is judged by."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bench.drills.env import pipeline_env
from bench.drills.harness import Processes, wait_for
from bench.drills.stack import DrillError, PrivateStack, fti
from feature_stream.codec import DLQ_REASON_HEADER
from feature_stream.outbox import ORIGINAL_URI_HEADER
from feature_stream.settings import FeatureStreamSettings
from featurestore.offline import OfflineStore
from fti_core.settings import load_settings
from fti_demo.simulate import SimConfig, SimEvent, generate

__all__ = ["Message", "Pipeline", "Stream", "sim_messages"]

WORKER = "worker"


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes
    event_id: str | None  # a valid event's id; None for a message that must be dead-lettered
    expected_reason: str | None = None


def sim_messages(count: int, seed: int, **config: object) -> list[Message]:
    """Demo transactions and labels (with their out-of-order, late and duplicate sends)."""
    events: Iterator[SimEvent] = generate(count, SimConfig(seed=seed, **config))  # type: ignore[arg-type]
    return [Message(e.key, e.value, e.event_id) for e in events]


class Pipeline:
    def __init__(
        self,
        stack: PrivateStack,
        name: str,
        workdir: Path,
        partitions: int = 2,
        redis_failure_mode: str = "unavailable",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stack = stack
        self.workdir = workdir
        self.env = pipeline_env(stack.addr, name, workdir / "data", partitions, redis_failure_mode)
        self.settings = load_settings(FeatureStreamSettings, environ=self.env)
        stack.topic_prefixes.append(self.settings.app_id)  # every topic of this pipeline starts with it
        self.procs = Processes(workdir)
        self.valid_ids: set[str] = set()
        self.sent = 0
        self.undelivered = 0
        self.expected_dead: Counter[str] = Counter()
        self.worker_starts = 0

    # -- processes -------------------------------------------------------------------------

    def start_worker(self) -> None:
        self.procs.start(WORKER, ["features", "worker"], self.env)
        self.worker_starts += 1

    def fti(self, *args: str, timeout_s: float = 300) -> str:
        return fti(list(args), self.env, self.workdir / "commands.log", timeout_s)

    def supervisor_restarts(self) -> int:
        return len(re.findall(r"restarting the worker", self.procs.log(WORKER)))

    def worker_log_lines(self) -> int:
        return len(self.procs.log(WORKER).splitlines())

    # -- producing -------------------------------------------------------------------------

    def _producer(self) -> Producer:
        # Idempotent, and patient: a record waits out a broker outage in the client's buffer.
        return Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 300_000,
                "message.max.bytes": 1_000_000,
                "log_level": 0,
            }
        )

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self.undelivered += 1

    def produce(self, messages: Iterable[Message], rate: float | None = None) -> int:
        producer = self._producer()
        t0, n = time.monotonic(), 0
        for m in messages:
            self._count(m)
            while True:
                try:
                    producer.produce(
                        self.settings.events_topic, key=m.key, value=m.value, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:  # full during an outage: wait for room
                    producer.poll(0.1)
            producer.poll(0)
            n += 1
            if rate and n % 50 == 0 and (ahead := n / rate - (time.monotonic() - t0)) > 0:
                time.sleep(ahead)
        if producer.flush(320) != 0:
            raise DrillError("the drill's producer could not deliver its events within 320 s")
        return n

    def _count(self, m: Message) -> None:
        self.sent += 1
        if m.event_id is not None:
            self.valid_ids.add(m.event_id)
        if m.expected_reason is not None:
            self.expected_dead[m.expected_reason] += 1

    # -- progress ----------------------------------------------------------------------------

    def lag(self) -> int | None:
        """Events not yet committed by the worker's group (raw and re-keyed topics); None if unknown."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": self.settings.app_id,
                "log_level": 0,
            }
        )
        try:
            lag = 0
            for topic in (self.settings.events_topic, self.settings.repartition_topic):
                meta = consumer.list_topics(topic, timeout=5).topics[topic]
                if meta.error is not None:
                    return None
                tps = [TopicPartition(topic, p) for p in meta.partitions]
                for tp in consumer.committed(tps, timeout=5):
                    _, high = consumer.get_watermark_offsets(tp, timeout=5)
                    lag += max(0, high - max(tp.offset, 0))
            return lag
        except KafkaException:
            return None
        finally:
            consumer.close()

    def wait_caught_up(self, timeout_s: float = 300) -> float:
        zeros = 0

        def drained() -> bool:
            nonlocal zeros  # twice in a row: the re-keyed topic may be committed a beat later
            zeros = zeros + 1 if self.lag() == 0 else 0
            return zeros >= 2

        return wait_for("the worker to catch up", drained, timeout_s, self.procs)

    # -- figures -----------------------------------------------------------------------------

    def archived_ids(self) -> set[str]:
        return set(OfflineStore(self.settings.offline_root).read_archive()["event_id"])

    def dead_letters(self) -> list[tuple[str, bytes]]:
        """Every dead letter so far: (reason, original bytes, read back from the store when spilled)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"{self.settings.app_id}-drill-dlq",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        topic = self.settings.dlq_topic
        try:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
            consumer.assign([TopicPartition(topic, p, 0) for p in parts])
            out: list[tuple[str, bytes]] = []
            seen = dict.fromkeys(parts, 0)
            deadline = time.monotonic() + 120
            while any(seen[p] < ends[p] for p in parts) and time.monotonic() < deadline:
                for msg in consumer.consume(500, timeout=1):
                    offset, headers = msg.offset(), msg.headers()
                    if msg.error() is None and offset is not None:
                        seen[msg.partition() or 0] = offset + 1
                        out.append(_dead_letter(headers if isinstance(headers, list) else [], msg.value() or b""))
            return out
        finally:
            consumer.close()

    def verify_mismatches(self) -> int:
        """Mismatches reported by `fti features verify --sample 0` (every entity of every view)."""
        try:
            out = self.fti("features", "verify", "--sample", "0", timeout_s=600)
        except DrillError as exc:
            found = re.search(r"FAILED: (\d+) mismatches", str(exc))
            if found is None:
                raise
            return int(found.group(1))
        if "OK: no mismatches" not in out:
            raise DrillError(f"unexpected output of fti features verify:\n{out[-2000:]}")
        return 0

    def stream_figures(self) -> dict[str, object]:
        """Produced, archived, lost, dead-lettered by reason and verify's mismatches."""
        archived = self.archived_ids()
        dead = Counter(reason for reason, _ in self.dead_letters())
        return {
            "events_produced": self.sent,
            "valid_events_produced": len(self.valid_ids),
            "undelivered_by_producer": self.undelivered,
            "events_archived": len(archived),
            "events_lost": len(self.valid_ids - archived),
            "dead_lettered_by_reason": dict(sorted(dead.items())),
            "mismatches": self.verify_mismatches(),
        }


def _dead_letter(headers: list[tuple[str, str | bytes | None]], value: bytes) -> tuple[str, bytes]:
    h = {k: v.encode() if isinstance(v, str) else v or b"" for k, v in headers}
    uri = h.get(ORIGINAL_URI_HEADER)
    if uri:  # oversized: its bytes were kept in the offline store
        value = Path(uri.decode()).read_bytes()
    return h.get(DLQ_REASON_HEADER, b"?").decode(), value


class Stream:
    """Produce messages at a steady rate from a background thread ("mid-stream" faults)."""

    def __init__(self, pipe: Pipeline, messages: list[Message], rate: float) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(pipe, messages, rate), daemon=True)

    def _run(self, pipe: Pipeline, messages: list[Message], rate: float) -> None:
        try:
            pipe.produce(messages, rate=rate)
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self, timeout_s: float = 400) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise DrillError("the drill's producer did not finish")
        if self.error is not None:
            raise DrillError(f"the drill's producer failed: {self.error}") from self.error
