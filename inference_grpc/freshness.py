"""Freshness you can see: how many of the served model's features are stale or missing.

What counts, per feature of a request (the README's "What you see when features are stale"):

* **missing**: the online store holds nothing for the entity in that view (never seen, or its
  keys expired), or the feature has no value at the request time (a mean, min, max or last
  over a window with no events; status MISSING);
* **stale**: the entity's newest event in that view is older than the view's TTL. Its windows
  are still evaluated at the request time and answered as such (a count is 0), but every
  window shorter than the TTL is empty: the store is not keeping up with time, which is what
  a history replayed from long ago, a stopped worker or a lagging topic look like. Values of
  the earlier online layout older than their TTL (status STALE) count too.

Request values (status REQUEST) never count. Two places report it:

* at start (and on each model swap), `assess` over a sample of the store's entities of each
  view of the model: a view without any stored entity counts wholly missing; one clear log
  line when the share is over the threshold;
* `FreshnessTracker` over the last requests, into the gauge
  `fti_inference_stale_feature_ratio` (seeded by the sample until requests come), with a log
  line when the share crosses the threshold (at most once a minute).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FreshnessTracker", "ViewFreshness", "assess", "describe", "format_age"]

log = logging.getLogger("inference_grpc.freshness")


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ViewFreshness:
    """One view of the model, as a sample of the online store shows it at `now_ms`."""

    view: str
    version: int
    features: int  # how many of the model's features come from this view
    ttl_ms: int | None  # None: the store has no spec of the view
    newest_ms: Sequence[int]  # sampled entities' newest event times

    def dated(self, now_ms: int) -> int:
        """Sampled entities with nothing within the TTL."""
        if self.ttl_ms is None:
            return len(self.newest_ms)
        return sum(1 for t in self.newest_ms if now_ms - t > self.ttl_ms)

    def bad_share(self, now_ms: int) -> float:
        return 1.0 if not self.newest_ms else self.dated(now_ms) / len(self.newest_ms)


def assess(views: Sequence[ViewFreshness], now_ms: int) -> float:
    """The share of the model's features that a request for a sampled entity finds stale or missing."""
    total = sum(v.features for v in views)
    return sum(v.features * v.bad_share(now_ms) for v in views) / total if total else 0.0


def format_age(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            return f"{ms / size:.1f}{unit}"
    return f"{max(ms, 0) / 1000:.1f}s"


def _view_line(v: ViewFreshness, now_ms: int) -> str:
    name = f"{v.view}:{v.version}"
    if not v.newest_ms:
        return f"{name}: no entity in the online store (every feature missing)"
    newest = format_age(now_ms - max(v.newest_ms))
    if v.ttl_ms is None:
        return f"{name}: no view spec in the online store, newest event {newest} ago"
    return (
        f"{name}: {v.dated(now_ms)} of {len(v.newest_ms)} sampled entities have no event within the view's "
        f"TTL ({format_age(v.ttl_ms)}), the newest event is {newest} old"
    )


def describe(model: str, version: int, views: Sequence[ViewFreshness], now_ms: int) -> str:
    """The start-up warning: how much is stale, per view why, and what to do."""
    ratio = assess(views, now_ms)
    per_view = "; ".join(_view_line(v, now_ms) for v in views)
    return (
        f"model {model!r} v{version}: {ratio:.0%} of its features are stale or missing in the online store "
        f"({per_view}). Predictions see empty windows; if the history was replayed from long ago, feed the "
        "worker current events or backfill the views (README: 'What you see when features are stale')"
    )


class FreshnessTracker:
    """The share of stale-or-missing features over the last `window` requests, kept in a gauge."""

    def __init__(self, gauge: _Gauge, threshold: float, window: int = 1000, warn_every_s: float = 60.0) -> None:
        self._gauge = gauge
        self._threshold = threshold
        self._window = window
        self._warn_every_s = warn_every_s
        self._last: deque[tuple[int, int]] = deque()
        self._bad = self._total = 0
        self._warned_at = -warn_every_s

    @property
    def ratio(self) -> float:
        return self._bad / self._total if self._total else 0.0

    def seed(self, ratio: float) -> None:
        """The start-up sample's share, shown until requests say otherwise."""
        if not self._last:
            self._gauge.set(ratio)

    def observe(self, bad: int, total: int) -> None:
        last = self._last
        last.append((bad, total))
        self._bad += bad
        self._total += total
        if len(last) > self._window:
            old_bad, old_total = last.popleft()
            self._bad -= old_bad
            self._total -= old_total
        ratio = self.ratio
        self._gauge.set(ratio)
        if ratio > self._threshold and bad:
            now = time.monotonic()
            if now - self._warned_at >= self._warn_every_s:
                self._warned_at = now
                log.warning(
                    "%.0f%% of the served model's features were stale or missing over the last %d requests "
                    "(metric fti_inference_stale_feature_ratio; README: 'What you see when features are stale')",
                    ratio * 100,
                    len(last),
                )
