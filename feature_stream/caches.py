"""The worker's bounded caches: dicts kept in least-recently-used-first order."""

from __future__ import annotations

from collections.abc import Iterable, Set
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


def evict_lru(cache: dict[K, V], limit: int, keep: Set[K]) -> int:
    """Drop the oldest entries of `cache` until at most `limit` are left, never one in `keep`
    (their changes are not saved yet); returns how many were dropped."""
    excess = len(cache) - limit
    if excess <= 0:
        return 0
    victims = []
    for k in cache:
        if k not in keep:
            victims.append(k)
            if len(victims) == excess:
                break
    for k in victims:
        del cache[k]
    return len(victims)
