"""An open-loop load generator for the integration tests: a fixed request rate, every outcome kept."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from fti.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["Load", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    sent: float
    received: float
    version: int | None
    code: str
    details: str = ""


@dataclass
class Load:
    stub: inference_pb2_grpc.InferenceServiceAsyncStub
    request: inference_pb2.PredictRequest
    rate: float
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _one(self) -> None:
        sent = time.monotonic()
        try:
            response = await self.stub.Predict(self.request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            self.samples.append(Sample(sent, time.monotonic(), None, exc.code().name, exc.details() or ""))
        else:
            self.samples.append(Sample(sent, time.monotonic(), response.model_version, "OK"))

    async def _run(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def latest_version(self) -> int | None:
        return self.samples[-1].version if self.samples else None

    def achieved_rate(self) -> float:
        span = self.samples[-1].sent - self.samples[0].sent
        return (len(self.samples) - 1) / span if span > 0 else 0.0
