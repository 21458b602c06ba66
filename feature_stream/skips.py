"""Messages an operator dead-letters by hand (`fti features dead-letter`), for what nothing foresaw.

The command records `topic/partition/offset -> reason` in one Redis hash beside the worker's
state; each worker reads it whenever it is assigned partitions (so also when it restarts
after a crash), and dead-letters a recorded message with reason MANUAL instead of processing
it. Nothing is skipped silently: the message still reaches the dead-letter topic, through the
same flush and ack path as any other.
"""

from __future__ import annotations

import redis
import redis.asyncio as aredis

from fti_core.errors import UnavailableError

__all__ = ["add_skip", "load_skips", "position", "skips_key"]


def skips_key(state_prefix: str) -> str:
    return f"{state_prefix}:skip"


def position(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def add_skip(client: redis.Redis, state_prefix: str, where: str, reason: str) -> None:
    try:
        client.hset(skips_key(state_prefix), where, reason)
    except redis.RedisError as exc:
        raise UnavailableError(f"redis: recording the skip failed: {exc}") from exc


async def load_skips(client: aredis.Redis, state_prefix: str) -> dict[str, str]:
    try:
        raw = await client.hgetall(skips_key(state_prefix))
    except redis.RedisError as exc:
        raise UnavailableError(f"redis: loading the skips failed: {exc}") from exc
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(x: bytes | str) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else x
