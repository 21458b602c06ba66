"""Prometheus metrics of one inference server, in their own registry.

A registry per server (not the process-global one) lets tests and benchmarks run several
servers in one process without metric name clashes.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .errors import ServerStartError

__all__ = ["Metrics"]

# Sub-millisecond resolution at the low end: a local Predict takes a few hundred microseconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "fti_inference_request_seconds", "Time to answer one RPC.", ["method"], registry=r, buckets=_LATENCY_BUCKETS
        )
        self.requests = Counter(
            "fti_inference_requests", "RPCs answered, by status code.", ["method", "code"], registry=r
        )
        self.served_version = Gauge(
            "fti_inference_served_model_version", "Model version now served.", ["model"], registry=r
        )
        self.feature_misses = Counter(
            "fti_inference_feature_misses",
            "Features scored as missing, by view and reason.",
            ["view", "reason"],
            registry=r,
        )
        self.stale_ratio = Gauge(
            "fti_inference_stale_feature_ratio",
            "Share of the served model's features that were stale or missing over the last requests "
            "(before any request: over a sample of the online store at start).",
            registry=r,
        )
        self.swaps = Counter(
            "fti_inference_model_swaps", "Model swap attempts by outcome.", ["model", "outcome"], registry=r
        )
        self.swap_seconds = Histogram(
            "fti_inference_swap_seconds", "Load + verify + warm-up time of a swap.", registry=r
        )
        self.store_errors = Counter("fti_inference_online_store_errors", "Failed online-store reads.", registry=r)
        self.store_retries = Counter(
            "fti_inference_online_store_retries", "Online-store reads retried after a timeout.", registry=r
        )
        self.model_events = Counter(
            "fti_inference_model_events", "Model events consumed, by kind.", ["kind"], registry=r
        )
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def serve_http(self, port: int, addr: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from outside
        """Expose /metrics; returns the bound port (useful with port 0). ServerStartError if it cannot."""
        try:
            self._http = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ServerStartError(
                f"cannot serve metrics on port {port}: {exc.strerror or exc} "
                "(choose another with --metrics-port; 0 picks a free one)"
            ) from exc
        return int(self._http[0].server_port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
