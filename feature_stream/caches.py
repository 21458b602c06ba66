"""The worker's bounded caches: dicts kept in least-recently-used-first order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from typing import TypeVar

__all__ = ["evict_lru", "touch"]

K = TypeVar("K")
V = TypeVar("V")


def touch(cache: dict[K, V], keys: Iterable[K]) -> list[K]:
    """Mark `keys` most recently used (moved to the end); returns those not in the cache."""
    missing = []
    for k in keys:
        v = cache.pop(k, None)
        if v is None:
            missing.append(k)
        else:
            cache[k] = v
    return missing


def evict_lru(
    cache: dict[K, V],
    limit: int | None,
    keep: Set[K],
    held: int = 0,
    most_held: int | None = None,
    size: Callable[[V], int] | None = None,
) -> int:
    """Drop the oldest entries of `cache`, never one in `keep` (their changes are not saved
    yet), until at most `limit` are left (None: any number) and, with `most_held`, what they
    hold (`held` now, `size` of each entry) is at most `most_held`. Returns what the dropped
    entries held."""
    excess = len(cache) - limit if limit is not None else 0
    over = held - most_held if most_held is not None and size is not None else 0
    if excess <= 0 and over <= 0:
        return 0
    victims = []
    dropped = 0
    for k, v in cache.items():
        if excess <= 0 and over <= 0:
            break
        if k in keep:
            continue
        n = size(v) if size is not None else 0
        victims.append(k)
        dropped += n
        excess -= 1
        over -= n
    for k in victims:
        del cache[k]
    return dropped
