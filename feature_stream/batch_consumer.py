"""Faust's Kafka consumer, delivering each fetch to a topic's batch handler in one call.

Faust hands records over one at a time: its drain loop runs the conductor's callback under
`wait_first` (two tasks and an `asyncio.wait` per record), and then come the channel, the
stream queue and the agent's iterator. On the feature benchmark's topic an agent that does
nothing with its events reached 17k records/s (a bare confluent-kafka loop decodes ~700k),
so Faust's dispatch (~60 µs a record) cost nearly as much as the worker's own processing.

`BatchApp.batch_handler(topic)` registers a coroutine that receives the topic's records of
each fetch as one list, in partition order. Everything else stays Faust's: group
membership, partition assignment and rebalance signals, flow control, the read offsets
that drop re-fetched records, gap acking, ack tracking (so a rebalance or shutdown waits for
held records) and offset commits. A handler acks each record (`Message.ack`) once its
effects are durable; an exception crashes the consumer, and so the worker, leaving the
batch unacked for whichever worker takes the partitions next.

The fetch wait is the app's (`fetch_max_wait_ms`), not Faust's fixed 1,500 ms. aiokafka keeps
one fetch in flight per broker, and a partition whose records are not yet handled is left out
of it; so while a fetch long-polls partitions with nothing new (the re-keyed topic, a quiet
source), records arriving on the busy ones wait for it to time out. At 3,000 events/s that
left the worker idle between fetches and the online values 2-3 s old.

A fetch also waits for `fetch_min_bytes` of records (within that wait), where aiokafka's default
answers at the first one. At a few thousand events a second, fetches of a handful of records
each cost the consumer thread's protocol work and the drain loop's per-batch work every few
milliseconds: the worker took 75 % of a core at 500 events/s and 85 % at 2,600/s, against 23 %
and 40 % waiting for 16 KB (freshness p99 the same, p50 10-15 ms later). Under load a fetch
holds more than that anyway, so a busy worker is not slowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any, ClassVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message, TopicT

from feature_stream.settings import DEFAULT_FETCH_MAX_WAIT_MS, DEFAULT_FETCH_MIN_BYTES

__all__ = ["BatchApp", "BatchHandler"]

BatchHandler = Callable[[list[Message]], Awaitable[None]]


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose drain loop groups each fetch by batch-handled topic."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        handlers: dict[str, BatchHandler] = self.app.batch_handlers  # type: ignore[attr-defined]  # a BatchApp's
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                batches: dict[str, list[Message]] = {}
                await self.sleep(0)
                if self.should_stop:
                    break
                async for tp, message in self.getmany(timeout=1.0):
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # fetched again after a seek: already delivered
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)  # compaction or transaction markers
                    read_offset[tp] = offset
                    handler = handlers.get(tp.topic)
                    if handler is None:  # any other topic: Faust's per-record path
                        await self.wait_first(self.callback(message), self.suspend_flow.wait())
                    else:
                        batches.setdefault(tp.topic, []).append(message)
                await self._deliver(batches, handlers)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise

    async def _deliver(self, batches: dict[str, list[Message]], handlers: dict[str, BatchHandler]) -> None:
        inbound = self.app.monitor.stream_inbound_time
        for topic, messages in batches.items():
            if not self.flow_active:
                # A rebalance began during the fetch: drop the rest; the partitions are sought
                # back to their committed offsets, so nothing unacked is lost.
                return
            now = monotonic()
            for m in messages:
                self.track_message(m)  # a rebalance or shutdown now waits for its ack
                # What Faust's stream would record per event: its livelock check reads it, and
                # without it logged "Stream has not started processing" every 30 s of a catch-up
                # longer than stream_processing_timeout (5 min), for partitions in progress.
                inbound[m.tp] = now
            await handlers[topic](messages)


class _BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its aiokafka consumer waiting on the broker as the app says."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = cast(BatchApp, self.app)  # Faust types it as any app
        # aiokafka reads them when it starts its fetcher; Faust passes no way to set them.
        for attr, value in (("_fetch_max_wait_ms", app.fetch_max_wait_ms), ("_fetch_min_bytes", app.fetch_min_bytes)):
            if not hasattr(consumer, attr):
                raise RuntimeError(f"aiokafka's consumer has no {attr}: this aiokafka is not supported")
            setattr(consumer, attr, value)
        return consumer


class _BatchTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer can hand whole fetches of a topic to one handler."""

    def __init__(
        self,
        *args: Any,
        fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
        fetch_min_bytes: int = DEFAULT_FETCH_MIN_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes

    def batch_handler(self, topic: TopicT) -> Callable[[BatchHandler], BatchHandler]:
        """Decorator: `handler(messages)` gets each fetch of `topic` (subscribed, with acks)."""

        def register(handler: BatchHandler) -> BatchHandler:
            for name in topic.topics:
                self.batch_handlers[name] = handler
            self.topics.add(topic)
            return handler

        return register

    def _new_transport(self) -> Any:
        return _BatchTransport(self.conf.broker_consumer, self)
