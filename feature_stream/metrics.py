"""Prometheus metrics of the feature worker, served on FTI_WORKER_METRICS_PORT when FTI_WORKER_METRICS_ENABLED."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, start_http_server

__all__ = [
    "BEYOND_HORIZON",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DUPLICATES",
    "EVENTS_IN",
    "FEATURES_WRITTEN",
    "LATE_EVENTS",
    "ONLINE_WRITES",
    "serve_metrics",
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
log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge("fti_features_consumer_lag", "Messages behind the high watermark", ["topic", "partition"])


def serve_metrics(port: int) -> WSGIServer:
    """Serve /metrics in a thread; port 0 picks a free one. The bound port is logged."""
    server, _thread = start_http_server(port)
    bound = int(server.server_port)
    if port == 0:
        log.warning("worker metrics on port %d (FTI_WORKER_METRICS_PORT=0 picked a free port)", bound)
    else:
        log.info("worker metrics on port %d", bound)
    return server
