"""A model trained and promoted through the CLI, `fti serve` for it, and a steady client load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.drills.env import free_port
from bench.drills.harness import wait_for
from bench.drills.pipeline import Message, Pipeline
from fti.v1 import events_pb2, inference_pb2, inference_pb2_grpc
from registry.models import ModelRegistry

__all__ = ["MODEL", "Load", "Server", "entities_of", "percentile", "serve_model"]

MODEL = "fraud"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def entities_of(messages: list[Message], n: int) -> list[dict[str, str]]:
    """Request entities (card, merchant) of the first `n` transactions among `messages`."""
    out: list[dict[str, str]] = []
    for m in messages:
        ev = events_pb2.Event.FromString(m.value)
        if ev.event_type == "transaction":
            out.append({"card_id": ev.entities["card_id"], "merchant_id": ev.entities["merchant_id"]})
        if len(out) >= n:
            break
    return out


@dataclass
class Server:
    target: str
    version: int


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def serve_model(pipe: Pipeline) -> Server:
    """Snapshot, `fti train`, `fti registry promote`, `fti serve`; returns once it is SERVING."""
    pipe.fti("features", "snapshot", "create")
    pipe.fti("train", "--model", MODEL, "--seed", "7", "-q", timeout_s=600)
    version = ModelRegistry.from_uri(pipe.settings.registry_root).versions(MODEL)[-1].version
    pipe.fti("registry", "promote", MODEL, str(version), "--alias", "production", "--reason", "drill")
    port = free_port()
    pipe.procs.start("serve", ["serve", "--model", MODEL, "--port", str(port)], pipe.env)
    target = f"127.0.0.1:{port}"
    wait_for("the server to report SERVING", lambda: _serving(target), 120, pipe.procs)
    return Server(target, version)


@dataclass
class Sample:
    sent: float
    code: str
    latency_ms: float
    missing: int  # features the response marks missing or stale


@dataclass
class Load:
    """Predict at a steady rate from a background thread; every outcome kept."""

    target: str
    entities: list[dict[str, str]]
    rate: float = 100.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def codes(self) -> dict[str, int]:
        return dict(Counter(s.code for s in self.samples))

    def _loop(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            i, next_at = 0, time.monotonic()
            while not self._stop.is_set():
                ents = self.entities[i % len(self.entities)]
                i += 1
                self.samples.append(self._call(stub, ents))
                next_at += 1 / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    @staticmethod
    def _call(stub: inference_pb2_grpc.InferenceServiceStub, ents: dict[str, str]) -> Sample:
        sent = time.monotonic()
        try:
            r = stub.Predict(inference_pb2.PredictRequest(model=MODEL, entities=ents), timeout=2.0)
        except grpc.RpcError as exc:
            return Sample(sent, exc.code().name, (time.monotonic() - sent) * 1000, 0)
        missing = sum(1 for f in r.features if f.status != inference_pb2.FEATURE_STATUS_OK)
        return Sample(sent, "OK", (time.monotonic() - sent) * 1000, missing)
