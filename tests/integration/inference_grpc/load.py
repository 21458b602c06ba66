"""An open-loop load generator for the integration tests: a steady request rate, every outcome kept.

The rate only paces the load; tests never assert on it. They say where they are in the load
with `mark()` (how many requests were sent so far: each sample carries its send order, `seq`)
and wait for answers with `wait_for_answers`, never for an amount of time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from fti.v1 import inference_pb2, inference_pb2_grpc

from ...waits import async_wait_for

__all__ = ["Load", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    seq: int  # send order, from 0
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
    samples: list[Sample] = field(default_factory=list)  # in the order answers arrived
    _sent: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _one(self, seq: int) -> None:
        sent = time.monotonic()
        try:
            response = await self.stub.Predict(self.request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            self.samples.append(Sample(seq, sent, time.monotonic(), None, exc.code().name, exc.details() or ""))
        else:
            self.samples.append(Sample(seq, sent, time.monotonic(), response.model_version, "OK"))

    async def _run(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._one(self._sent))
            self._sent += 1
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not waiting
        await asyncio.gather(*pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def mark(self) -> int:
        """The `seq` the next request will get: samples with `seq >= mark()` are sent from now on."""
        return self._sent

    def answers(self, *, after: int = 0, code: str | None = None, version: int | None = None) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.seq >= after and (code is None or s.code == code) and (version is None or s.version == version)
        ]

    async def wait_for_answers(
        self, count: int, *, after: int = 0, code: str | None = None, version: int | None = None
    ) -> list[Sample]:
        """Wait until `count` answers match (sent at or after `after`, with that code / version)."""
        what = f"{count} answers (sent from #{after}, code {code}, version {version})"
        await async_wait_for(
            lambda: len(self.answers(after=after, code=code, version=version)) >= count,
            what=what,
            details=lambda: f"{len(self.samples)} answers so far, last {self.samples[-1:]}",
        )
        return self.answers(after=after, code=code, version=version)

    def latest_version(self) -> int | None:
        return self.samples[-1].version if self.samples else None

    def achieved_rate(self) -> float:
        """For the record only (printed); no test asserts a rate."""
        span = self.samples[-1].sent - self.samples[0].sent
        return (len(self.samples) - 1) / span if span > 0 else 0.0
