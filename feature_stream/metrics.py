"""Prometheus metrics of the feature worker, served with its health endpoints by `feature_stream.health`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "BEYOND_HORIZON",
    "CACHED",
    "CACHED_EVENTS",
    "CACHE_MISSES",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DUPLICATES",
    "EVENTS_IN",
    "FEATURES_WRITTEN",
    "LATE_EVENTS",
    "ONLINE_WRITES",
]

EVENTS_IN = Counter("fti_features_events_in", "Raw messages consumed")
DUPLICATES = Counter("fti_features_duplicates", "Events dropped as duplicate event_ids")
DEAD_LETTERS = Counter("fti_features_dead_letters", "Messages sent to the dead-letter topic", ["reason"])
LATE_EVENTS = Counter("fti_features_late_events", "Events later than a view's allowed lateness", ["view"])
FEATURES_WRITTEN = Counter("fti_features_rows_written", "Offline feature rows written", ["view"])
ONLINE_WRITES = Counter("fti_features_online_writes", "Online values applied in Redis", ["view"])
BEYOND_HORIZON = Counter(
    "fti_features_beyond_state_horizon", "Accepted events older than the retained state (inexact)", ["view"]
)
CONSUMER_LAG = Gauge("fti_features_consumer_lag", "Messages behind the high watermark", ["topic", "partition"])
CACHED = Gauge("fti_features_cached", "View entity states and message key states held in memory", ["kind"])
CACHED_EVENTS = Gauge(
    "fti_features_cached_events",
    "Events the cached view entities retain (kind=entities) and ids the cached message keys remember (kind=keys)",
    ["kind"],
)
CACHE_MISSES = Counter(
    "fti_features_cache_misses",
    "View entities (kind=entities) and message keys (kind=keys) not cached when a batch needed them, read from "
    "the state store: first sightings, and reloads after an eviction",
    ["kind"],
)
