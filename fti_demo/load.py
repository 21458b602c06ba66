"""A steady gRPC client for the demo: calls Predict in a loop, counting failures and served versions."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from fti.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["LoadStats", "PredictionLoad"]


@dataclass
class LoadStats:
    ok: int = 0
    failed: int = 0
    versions: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_seen_ms: dict[int, float] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PredictionLoad:
    """Calls the server from a background thread at up to `rate` requests per second."""

    def __init__(self, target: str, model: str, entities: list[dict[str, str]], rate: float = 200.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._model = model
        self._entities = entities
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-load", daemon=True)
        self.stats = LoadStats()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> LoadStats:
        self._stop.set()
        self._thread.join(10)
        self._channel.close()
        return self.stats

    def current_version(self) -> int | None:
        return max(self.stats.first_seen_ms, key=lambda v: self.stats.first_seen_ms[v], default=None)

    def _loop(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            request = inference_pb2.PredictRequest(model=self._model, entities=self._entities[i % len(self._entities)])
            i += 1
            started = time.perf_counter()
            try:
                response = self._stub.Predict(request, timeout=2.0)
            except grpc.RpcError as exc:
                self.stats.failed += 1
                self.stats.errors[f"{exc.code().name}: {exc.details()}"] += 1
            else:
                self.stats.ok += 1
                self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
                self.stats.versions[response.model_version] += 1
                self.stats.first_seen_ms.setdefault(response.model_version, time.time() * 1000)
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
