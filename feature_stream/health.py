"""The worker's HTTP endpoint: Prometheus `/metrics`, and `/livez` and `/readyz` for supervisors.

The server runs on its own thread, so it answers (and says "not live") even when the event
loop is stuck: liveness is the loop's heartbeat, readiness is "assigned partitions and making
progress". `fti_features_stalled_since_seconds` is computed when scraped, for the same reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Health", "HealthServer"]

log = logging.getLogger("fti.worker")

LOOP_STALL = Histogram(
    "fti_features_event_loop_stall_seconds",
    "How late the event loop ran the worker's 1 s heartbeat: time it spent on something else",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class Health:
    """What the event loop reports (heartbeats, progress, lag) and what probes read from it."""

    def __init__(self, *, live_after_s: float, stall_after_s: float) -> None:
        self.live_after_s = live_after_s
        self.stall_after_s = stall_after_s
        now = time.monotonic()
        self._beat = now
        self._progress = now
        self._progress_wall = time.time()
        self.assigned = False
        self.lag = 0
        self.events = 0
        self._longest_stall = 0.0  # since the last summary line

    def stalled_for(self, seconds: float) -> None:
        """The event loop ran a task this much later than it asked to run."""
        seconds = max(0.0, seconds)
        self._longest_stall = max(self._longest_stall, seconds)
        LOOP_STALL.observe(seconds)

    def take_longest_stall(self) -> float:
        longest, self._longest_stall = self._longest_stall, 0.0
        return longest

    def beat(self) -> None:
        self._beat = time.monotonic()

    def progressed(self, events: int = 0) -> None:
        self._progress = time.monotonic()
        self._progress_wall = time.time()
        self.events += events

    def loop_alive(self) -> bool:
        return time.monotonic() - self._beat < self.live_after_s

    def stalled_since(self) -> float | None:
        """Wall time of the last progress while work waits and nothing moves; None when not stalled."""
        idle = time.monotonic() - self._progress
        waiting = self.lag > 0 or not self.loop_alive()
        if waiting and idle >= self.stall_after_s:
            return self._progress_wall
        return None

    def ready(self) -> bool:
        return self.assigned and self.loop_alive() and self.stalled_since() is None


class _StallCollector(Collector):
    def __init__(self, health: Health) -> None:
        self._health = health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        since = self._health.stalled_since()
        yield GaugeMetricFamily(
            "fti_features_stalled_since_seconds",
            "Unix time since which the worker has work waiting and makes no progress; 0 when it is not stalled",
            value=since or 0.0,
        )
        yield GaugeMetricFamily(
            "fti_features_ready",
            "1 when the worker has partitions and makes progress",
            value=float(self._health.ready()),
        )


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/livez":
                ok = health.loop_alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"event loop not responding\n")
            elif path == "/readyz":
                ok = health.ready()
                self._send(200 if ok else 503, b"ok\n" if ok else self._why_not().encode())
            else:
                self._send(404, b"not found\n")

        def _why_not(self) -> str:
            if not health.loop_alive():
                return "event loop not responding\n"
            if not health.assigned:
                return "no partitions assigned\n"
            return "stalled: work is waiting and nothing moves\n"

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds would flood the log

    return Handler


class HealthServer:
    """Serves `/metrics`, `/livez` and `/readyz` on `host:port` (port 0: a free port) from a thread."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(health))
        self._server.daemon_threads = True
        self._collector = _StallCollector(health)
        REGISTRY.register(self._collector)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fti-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on port %d (/metrics, /livez, /readyz)", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        REGISTRY.unregister(self._collector)
