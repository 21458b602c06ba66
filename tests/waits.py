"""Waiting on conditions, never on the clock: the one place tests wait for something to happen.

A test that needs a worker to have committed offsets, a consumer group to have rebalanced, a
key to appear or a server to become SERVING polls for exactly that here, with a generous
timeout that only bounds a broken run, and fails naming what it waited for. No test sleeps
"long enough"; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "WaitTimeout",
    "async_wait_for",
    "committed_offsets",
    "consume_until",
    "group_members",
    "wait_for",
]

_T = TypeVar("_T")

# Long enough for a busy 2-core machine running the broker, Redis and other suites at once;
# a healthy run returns as soon as the condition holds, so this only bounds a broken one.
DEFAULT_TIMEOUT_S = 60.0
_POLL_S = 0.05


class WaitTimeout(AssertionError):
    """The condition did not hold within the timeout."""


def _timed_out(what: str, timeout_s: float, details: Callable[[], str] | None) -> WaitTimeout:
    extra = f"\n{details()}" if details is not None else ""
    return WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}{extra}")


def wait_for(
    check: Callable[[], _T],
    *,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = _POLL_S,
    details: Callable[[], str] | None = None,
) -> _T:
    """Poll `check` until it returns something truthy, and return that; fail naming `what`.

    `details` is called on timeout to add context (a process's log, the last value seen).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout_s, details)
        time.sleep(poll_s)


async def async_wait_for(
    check: Callable[[], Awaitable[_T] | _T],
    *,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = _POLL_S,
    details: Callable[[], str] | None = None,
) -> _T:
    """`wait_for` for a running event loop: `check` may be sync or async; the loop keeps running."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout_s, details)
        await asyncio.sleep(poll_s)


# ---- Kafka observations -----------------------------------------------------------------------


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (0 where nothing is committed yet)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def group_members(bootstrap: str, group: str) -> list[set[int]]:
    """Each current member of the consumer group, as the set of partitions it is assigned
    (of any topic); an empty list while the group is empty or rebalancing."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if str(description.state).rsplit(".", 1)[-1] != "STABLE":
        return []
    return [{tp.partition for tp in m.assignment.topic_partitions} for m in description.members]


def consume_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[tuple[bytes | None, bytes]]], bool],
    *,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[tuple[bytes | None, bytes]]:
    """Read `topic` from its start (a fresh group) until `done(messages so far)`; (key, value) pairs."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, bytes]] = []

    def step() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            out.append((msg.key(), msg.value()))
        return done(out)

    try:
        wait_for(step, what=what, timeout_s=timeout_s, poll_s=0, details=lambda: f"{len(out)} messages read")
    finally:
        consumer.close()
    return out
