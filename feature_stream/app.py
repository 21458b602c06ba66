"""The Faust app: two batch handlers around `Processor`, plus topic creation and the worker entry point.

* `ingest` gets the raw topic's records of each fetch (`batch_consumer`: Faust's consumer
  without its per-record dispatch); each batch is held (not acked) until the processor has
  flushed its outputs and state, so Faust commits only those offsets.
* `aggregate` gets the re-keyed topic: events routed to views whose entity is not the
  raw message key, keyed by that entity so one worker owns each entity.
State is kept in Redis by the processor (not in Faust tables), so no changelog recovery is
needed when partitions move; caches are dropped on every assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import faust
import mode.loop
import redis.asyncio as aredis
from faust.sensors.monitor import Monitor
from faust.types import TP, EventT, Message, StreamT
from prometheus_client import Counter

from feature_stream import log_faults, log_limits, metrics
from feature_stream.batch_consumer import BatchApp
from feature_stream.codec import DeadLetter
from feature_stream.collector import Collector
from feature_stream.faults import EXIT_OK, Fault, classify
from feature_stream.health import Health, HealthServer
from feature_stream.memory_budget import BYTES_PER_EVENT, available_memory, default_max_cached_events
from feature_stream.outbox import KafkaOutbox
from feature_stream.processor import Processor
from feature_stream.records import InMessage, ViewItem
from feature_stream.settings import FeatureStreamSettings
from feature_stream.skips import load_skips
from feature_stream.state import RedisStateStore
from featurestore.catalogue import Catalogue
from featurestore.definitions import DefinitionError, Definitions, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import AsyncRedisOnlineStore, RedisOnlineStore
from fti.v1 import events_pb2
from fti_core import native
from fti_core.errors import UnavailableError
from fti_core.topics import TopicSpec, create_missing_topics

__all__ = ["build_app", "ensure_topics", "run_worker"]

log = logging.getLogger("fti.worker")

# How often the flush loop looks whether buffered work is due (`flush_interval_s`); also when
# the garbage collector may run (`feature_stream.collector`).
FLUSH_TICK_S = 0.1
# Items of re-keyed records handled in one go before the event loop is let run (at ~70 µs an
# item, 20,000 held it for up to 2.5 s in loop_stall.py).
REKEYED_CHUNK_ITEMS = 2_000


def ensure_topics(settings: FeatureStreamSettings, defs: Definitions | None = None) -> list[str]:
    """Create the raw, dead-letter and re-keyed topics, and the sources' topics, when missing
    (broker auto-creation may be off); a source topic is created like the raw one."""
    table = settings.topics
    rf = table.events.replication_factor
    specs = [
        table.events,
        table.dlq,
        TopicSpec(settings.repartition_topic, table.rekeyed_partitions, rf),
        # Faust's partition assignor elects its leader through a one-partition topic.
        TopicSpec(f"{settings.app_id}-__assignor-__leader", 1, rf),
    ]
    if defs is not None:
        _check_source_topics(settings, defs)
        specs += [table.source(t) for t in defs.source_topics()]
    created = create_missing_topics(settings.confluent_config(), specs)
    sourced = defs.source_topics() if defs is not None else {}
    for t in created:
        if t in sourced:
            log.warning("created the missing topic %s of source %s", t, sourced[t].name)
    return created


def _check_source_topics(settings: FeatureStreamSettings, defs: Definitions) -> None:
    """A source reads a topic of its own, never one the pipeline writes or the raw topic."""
    ours = {
        settings.events_topic: "the raw events topic (FTI_EVENTS_TOPIC)",
        settings.dlq_topic: "the dead-letter topic",
        settings.models_topic: "the model events topic",
        settings.repartition_topic: "the worker's re-keyed topic",
    }
    for topic, src in defs.source_topics().items():
        if topic in ours:
            raise DefinitionError(f"source {src.name}: topic {topic!r} is {ours[topic]}; give the source its own")


def _web_port(settings: FeatureStreamSettings) -> int:
    """The Faust web port; 0 picks a free one now, because Faust does not say which it bound."""
    if settings.web_port:
        return settings.web_port
    with socket.socket() as s:
        s.bind(("", 0))
        port = int(s.getsockname()[1])
    log.warning("worker web views on port %d (FTI_WORKER_WEB_PORT=0 picked a free port)", port)
    return port


def _hold(messages: Sequence[Message], consumer: Any) -> Callable[[], None]:
    """Hold a batch unacked; the returned callback acks it.

    A message is acked (and its offset becomes committable) when its reference count drops to
    zero; the reference taken here is released only once the processor has flushed the
    batch's outputs and state, which may be several batches later.
    """
    for m in messages:
        m.incref()

    def ack() -> None:
        for m in messages:
            m.ack(consumer)

    return ack


def _to_messages(messages: Sequence[Message], source_topics: frozenset[str] = frozenset()) -> list[InMessage]:
    return [
        InMessage(
            m.topic,
            m.partition,
            m.offset,
            m.key,
            m.value,
            int(m.timestamp * 1000) if m.timestamp else None,
            own_keys=m.topic in source_topics,
        )
        for m in messages
    ]


class _QuietMonitor(Monitor):
    """Faust's stats monitor without its per-record hooks.

    Its four hooks per message (counters, timestamps, per-stream lookups) are read only by
    Faust's web views, which the worker does not serve; its own Prometheus metrics are kept
    by the processor. Commit, send and rebalance statistics are left as they are."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any], state: dict[str, Any] | None = None
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass


def _app_config(settings: FeatureStreamSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap_servers}",
        "store": "memory://",
        "web_enabled": settings.web_enabled,
        "web_port": _web_port(settings) if settings.web_enabled else settings.web_port,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_commit_interval": settings.commit_interval_s,
        # Faust's default 1 MB per partition fetch starves a fast consumer; a fetch of up to
        # 10k records is one call of a batch handler.
        "consumer_max_fetch_size": 8 * 1024 * 1024,
        "broker_max_poll_records": 10_000,
        "topic_partitions": settings.topics.rekeyed_partitions,
        "topic_replication_factor": settings.topics.events.replication_factor,
        "topic_allow_declare": False,
        "stream_wait_empty": True,
        "producer_acks": -1,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "Monitor": _QuietMonitor,
        # Faust makes its data directory at start even with in-memory tables; its default is
        # the working directory, which a container's user may not write (the image's /app).
        "datadir": str(_faust_dir(settings)),
    }
    ctx = settings.ssl_context()
    if ctx is not None:
        conf["broker_credentials"] = ctx
    return conf


def _faust_dir(settings: FeatureStreamSettings) -> Path:
    """Faust's data directory (nothing in it is needed: the tables are in memory); its parent made."""
    parent = settings.data_dir / "faust"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / settings.app_id


class Stop:
    """Why the worker is stopping: the first fault a handler or the flush timer met."""

    def __init__(self) -> None:
        self.fault: Fault | None = None

    def record(self, exc: BaseException) -> None:
        if self.fault is None:
            self.fault = classify(exc)


def _redis(settings: FeatureStreamSettings) -> aredis.Redis:
    # Explicit timeouts: a Redis that stops answering is a fault to report, not a hang.
    return aredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )


def build_app(
    settings: FeatureStreamSettings,
    defs: Definitions,
    health: Health | None = None,
    stop: Stop | None = None,
    collector: Collector | None = None,
) -> BatchApp:
    health = health or Health(live_after_s=settings.live_after_s, stall_after_s=settings.stall_after_s)
    stop = stop or Stop()
    app = BatchApp(
        settings.app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        fetch_min_bytes=settings.fetch_min_bytes,
        **_app_config(settings),
    )
    # The raw topic and every source's topics: one handler, each message decoded by its topic.
    source_topics = frozenset(defs.source_topics())
    raw = app.topic(settings.events_topic, *sorted(source_topics), key_type=bytes, value_type=bytes)
    rekeyed = app.topic(settings.repartition_topic, key_type=bytes, value_type=bytes)
    state_client = _redis(settings)
    processor = Processor(
        defs,
        RedisStateStore(state_client, settings.state_key_prefix),
        AsyncRedisOnlineStore(_redis(settings), settings.redis_prefix),
        OfflineStore(settings.offline_root),
        KafkaOutbox(settings),
        future_skew_ms=settings.future_skew_ms,
        dedup_retention_ms=settings.dedup_retention_ms,
        flush_interval_s=settings.flush_interval_s,
        max_cached=settings.max_cached_entities,
        max_cached_events=_max_cached_events(settings),
    )
    size = settings.batch_size
    skips = _Skips(processor, lambda: load_skips(state_client, settings.state_key_prefix))
    _connect_flushing(app, processor, health, stop, skips, collector)

    @app.batch_handler(raw)
    async def ingest(messages: list[Message]) -> None:
        await skips.ensure_loaded()
        for i in range(0, len(messages), size):  # bounded batches keep online values fresh
            chunk = messages[i : i + size]
            msgs = _to_messages(chunk, source_topics)
            try:
                await processor.ingest(msgs, _hold(chunk, app.consumer))
            except Exception as exc:
                processor.reset()  # the cache may be ahead of the saved state
                stop.record(exc)
                raise
            _record_lag(app, msgs)
            health.progressed(len(msgs))
            # A chunk whose state is cached awaits nothing: let the online writes it queued,
            # the flush timer and other tasks run before the next one.
            await asyncio.sleep(0)

    @app.batch_handler(rekeyed)
    async def aggregate(messages: list[Message]) -> None:
        await skips.ensure_loaded()
        # A re-keyed record packs up to hundreds of items, and a catch-up fetch holds up to 10k
        # records: handled whole, one fetch held the event loop for 13 s (Redis reads timed
        # out meanwhile). Chunks of about REKEYED_CHUNK_ITEMS items, the loop free between them.
        for chunk, items in _rekeyed_chunks(processor, messages, REKEYED_CHUNK_ITEMS):
            try:
                await processor.aggregate(items, _hold(chunk, app.consumer))
            except Exception as exc:
                processor.reset()
                stop.record(exc)
                raise
            _record_lag(app, chunk)
            health.progressed()
            await asyncio.sleep(0)

    return app


def _max_cached_events(settings: FeatureStreamSettings) -> int:
    """The setting, or the default from the memory the worker may use (`memory_budget`)."""
    if settings.max_cached_events is not None:
        return settings.max_cached_events
    memory, source = available_memory()
    bound = default_max_cached_events(memory)
    log.info(
        "worker caches: at most %d events and %d event ids (FTI_WORKER_MAX_CACHED_EVENTS unset: half of %s, "
        "%.1f GB, at %d bytes each)",
        bound, bound, source, memory / 2**30, BYTES_PER_EVENT,
    )  # fmt: skip
    return bound


def _rekeyed_chunks(
    processor: Processor, messages: Sequence[Message], most_items: int
) -> Iterator[tuple[list[Message], list[ViewItem]]]:
    """Consecutive runs of re-keyed records with their items, about `most_items` a run."""
    chunk: list[Message] = []
    items: list[ViewItem] = []
    for m in messages:
        chunk.append(m)
        items.extend(_record_items(processor, m))
        if len(items) >= most_items:
            yield chunk, items
            chunk, items = [], []
    if chunk:
        yield chunk, items


def _record_items(processor: Processor, m: Message) -> list[ViewItem]:
    """The items of one re-keyed record; a record that cannot be read, or that an operator
    dead-lettered by hand, goes to the dead-letter topic instead."""
    msg = InMessage(m.topic, m.partition, m.offset, m.key, m.value)
    if msg.position in processor.skip:
        processor.dead_letter(msg, DeadLetter(events_pb2.DEAD_LETTER_REASON_MANUAL, processor.skip[msg.position]))
        return []
    try:
        return ViewItem.decode_many(m.value or b"[]")
    except Exception as exc:  # noqa: BLE001 - one record never stops the worker: it is dead-lettered
        letter = DeadLetter(events_pb2.DEAD_LETTER_REASON_PROCESSING_FAILED, f"{type(exc).__name__}: {exc}")
        processor.dead_letter(msg, letter)
        return []


class _Skips:
    """The messages an operator dead-lettered by hand, loaded before the first fetch of every
    assignment: Faust may hand over a fetch before its assignment signal's handlers finish."""

    def __init__(self, processor: Processor, load: Callable[[], Awaitable[dict[str, str]]]) -> None:
        self._processor = processor
        self._load = load
        self.loaded = False

    async def load(self) -> None:
        self._processor.skip = await self._load()
        self.loaded = True

    async def ensure_loaded(self) -> None:
        if not self.loaded:
            await self.load()


def _connect_flushing(
    app: faust.App,
    processor: Processor,
    health: Health,
    stop: Stop,
    skips: _Skips,
    collector: Collector | None,
) -> None:
    """Held batches are acked only by a flush: a loop bounds how long offsets wait (and lets
    Faust's wait for unacked messages finish during a rebalance); a revocation flushes at once,
    and an assignment starts from the saved state. A flush that fails stops the worker. The
    loop's ticks are also when the garbage collector may run (`feature_stream.collector`).

    A stopping worker flushes at every tick until Faust cancels the loop: Faust's stop waits
    for every held message to be acked before it commits and leaves the group, and only a
    flush acks them. The loop used to end with the stop, so a SIGTERM under live traffic (where
    some batch is always held) waited until the supervisor killed the worker, 30 s later, its
    buffered work unflushed and its partitions still its own for the session timeout."""

    @app.task  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def _flush_due() -> None:
        # A plain loop rather than `app.timer`: a flush may outlast the tick, which is fine here.
        while True:
            await asyncio.sleep(FLUSH_TICK_S)
            try:
                await (processor.flush() if app.should_stop else processor.flush_if_due())
            except Exception as exc:  # noqa: BLE001 - recorded for the exit status, then the worker stops
                stop.record(exc)
                await app.crash(exc)
                return
            if collector is not None:
                collector.tick()

    @app.task  # type: ignore[untyped-decorator]
    async def _heartbeat() -> None:
        log_limits.install()  # Faust has set up its log handlers by now
        log_faults.install()
        summary = _Summary(health)
        loop = asyncio.get_running_loop()
        ticks = 0
        while not app.should_stop:
            health.beat()
            health.lag = _refresh_lag(app)
            summary.maybe_log()
            ticks += 1
            if ticks % 10 == 0:  # an operator's `fti features dead-letter` reaches a running worker
                with contextlib.suppress(UnavailableError):  # a Redis outage shows in the batches
                    await skips.load()
            asked = loop.time()
            await asyncio.sleep(1.0)
            health.stalled_for(loop.time() - asked - 1.0)  # how late the loop woke this task

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's signal typing is narrower than its calls
    async def _on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        health.assigned = False
        try:
            await processor.flush()
        except Exception as exc:
            stop.record(exc)
            raise

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        processor.reset()
        skips.loaded = False  # the first fetch after an assignment waits for the list
        try:
            await skips.load()
        except Exception as exc:
            stop.record(exc)
            raise
        health.assigned = True
        health.progressed()
        assigned = kwargs.get("assigned") or set()
        topics = sorted({tp.topic for tp in assigned})
        log.info("partitions assigned: %d of %s", len(assigned), ", ".join(topics) or "no topic")


class _Summary:
    """One INFO line a minute: events handled, lag; not a line per message."""

    EVERY_S = 60.0

    def __init__(self, health: Health) -> None:
        self._health = health
        self._at = asyncio.get_running_loop().time()
        self._events = 0
        self._dead = _dead_letters_by_reason()
        self._misses = _totals(metrics.CACHE_MISSES)

    def maybe_log(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._at < self.EVERY_S:
            return
        events = self._health.events - self._events
        misses = _totals(metrics.CACHE_MISSES)
        log.info(
            "%d events in the last %.0f s (%.0f/s), lag %d, longest event-loop stall %.0f ms, "
            "cache misses %d entities and %d keys",
            events,
            now - self._at,
            events / (now - self._at),
            self._health.lag,
            self._health.take_longest_stall() * 1000,
            misses.get("entities", 0) - self._misses.get("entities", 0),
            misses.get("keys", 0) - self._misses.get("keys", 0),
        )
        self._misses = misses
        # Dead letters are easy to miss in a metric alone: one line a minute says how many, and why.
        dead = _dead_letters_by_reason()
        new = {r: n - self._dead.get(r, 0) for r, n in dead.items() if n > self._dead.get(r, 0)}
        if new:
            reasons = ", ".join(f"{r} {n:.0f}" for r, n in sorted(new.items(), key=lambda x: -x[1]))
            log.warning(
                "%.0f messages dead-lettered in the last %.0f s: %s", sum(new.values()), now - self._at, reasons
            )
        self._at, self._events, self._dead = now, self._health.events, dead


def _dead_letters_by_reason() -> dict[str, float]:
    """The dead-letter counter's totals by reason, as this process has counted them."""
    return _totals(metrics.DEAD_LETTERS)


def _totals(counter: Counter) -> dict[str, float]:
    """A one-label counter's totals by its label, as this process has counted them."""
    return {
        next(iter(s.labels.values())): s.value
        for family in counter.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }


def _refresh_lag(app: faust.App) -> int:
    """Lag of every assigned partition from its committed offset, kept true while nothing moves."""
    consumer = app.consumer
    total = 0
    try:
        assigned = consumer.assignment()
        committed = getattr(consumer, "_committed_offset", {})
    except (AttributeError, KeyError, RuntimeError):
        return 0
    for tp in assigned:
        high = consumer.highwater(tp)
        if high is None:
            continue
        done = committed.get(tp)
        lag = max(0, high - (done or 0))
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
        total += lag
    return total


class _Positioned(Protocol):
    """Where a record was read: an `InMessage` or a Faust message."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def _record_lag(app: faust.App, msgs: Sequence[_Positioned]) -> None:
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset)
    for (topic, partition), offset in last.items():
        try:
            high = app.consumer.highwater(faust.types.TP(topic, partition))
        except (KeyError, AttributeError):
            continue
        if high is not None:
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, high - offset - 1))


def _use_event_loop(choice: str) -> None:
    """uvloop when asked for or, with "auto", when installed: Faust's per-record dispatch is loop-bound."""
    if choice == "asyncio":
        return
    try:
        import uvloop  # noqa: F401 - only probing that it is installed
    except ImportError:
        if choice == "uvloop":
            raise
        return
    mode.loop.use("uvloop")


def _start(settings: FeatureStreamSettings, health: Health) -> Definitions:
    """What happens before the Faust worker runs; a fault here is classified like any other."""
    defs = load_definitions(settings.definitions_path)
    Catalogue(settings.offline_root).register(defs.views)
    # Readers evaluate tiles with the view's definition: publish it before any tile is written.
    RedisOnlineStore.from_url(settings.redis_url.get_secret_value(), settings.redis_prefix).register_views(defs.views)
    if settings.state_slack_ms != 3_600_000:
        log.warning("FTI_WORKER_STATE_SLACK_MS is ignored: the worker keeps what reads at the newest time can see")
    ensure_topics(settings, defs)
    if settings.metrics_enabled:
        HealthServer(health, settings.metrics_host, settings.metrics_port).start()
    return defs


def run_worker(settings: FeatureStreamSettings) -> int:
    """Blocking: prepare topics and the catalogue, run the Faust worker until it stops, and
    return the exit status (`feature_stream.faults`): 0 only for a requested stop."""
    health = Health(live_after_s=settings.live_after_s, stall_after_s=settings.stall_after_s)
    stop = Stop()
    try:
        defs = _start(settings, health)
    except Exception as exc:  # noqa: BLE001 - classified into the exit status
        stop.record(exc)
        return _report(stop)
    hot_path = native.status()
    # Stale compiled modules are a build left behind: the worker runs, interpreted and slower.
    log.log(logging.WARNING if hot_path.startswith("interpreted:") else logging.INFO, "hot path: %s", hot_path)
    _use_event_loop(settings.event_loop)
    collector = Collector(full_every_s=settings.gc_full_interval_s)
    app = build_app(settings, defs, health, stop, collector)
    collector.start()
    worker = _faust_worker(app, settings.log_level)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            stop.record(RuntimeError(f"Faust worker exited with status {exc.code}"))
    except BaseException as exc:  # noqa: BLE001 - classified and reported as the exit status
        stop.record(exc)
    crash = getattr(app, "crash_reason", None) or getattr(worker, "crash_reason", None)
    if crash is not None:
        stop.record(crash)
    return _report(stop)


def _faust_worker(app: faust.App, log_level: str) -> faust.Worker:
    """Faust's worker without its terminal spinner.

    With the spinner (made even with `quiet=True`) Faust sets the root logger to DEBUG and adds
    a DEBUG handler that turns the spinner: every debug call of aiokafka, Faust and redis-py then
    built a log record (a third of the consumer thread's samples at 2,000 events/s), and the
    worker wrote cursor escape codes to its standard output."""
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.spinner = None
    return worker


def _report(stop: Stop) -> int:
    if stop.fault is None:
        # Only a stop that got this far flushed what it held and committed (a killed one does not).
        log.info("fti features worker: stopped cleanly: what it processed is flushed and its offsets committed")
        return EXIT_OK
    log.error("fti features worker: stopping (exit %d): %s", stop.fault.exit_code, stop.fault.line())
    return stop.fault.exit_code
