"""Drill 6: 200 concurrent gRPC callers sending what a server meets in the wild.

Undecodable bytes through generic calls, batches far over the limit, a message over the size
limit, NaN request values, missing and unknown entities, 1 ms deadlines, unknown models,
mixed with valid calls. The bar: no INTERNAL or UNKNOWN status, the server keeps serving
(and is SERVING afterwards), and the p99 of the valid calls is reported.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.drills.fuzz_events import raw_value
from bench.drills.harness import DrillResult
from bench.drills.pipeline import Pipeline, sim_messages
from bench.drills.serving import MODEL, entities_of, percentile, serve_model
from bench.drills.stack import PrivateStack
from featurestore.values import to_value
from fti.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["run"]

FORBIDDEN = {"INTERNAL", "UNKNOWN"}
SERVICE = "/fti.v1.InferenceService/"
Call = Callable[[random.Random], Awaitable[object]]


class Fuzzer:
    def __init__(self, channel: grpc.aio.Channel, entities: list[dict[str, str]]) -> None:
        self.stub = inference_pb2_grpc.InferenceServiceStub(channel)
        # Generic calls: raw bytes in and out, so the server gets exactly what we send.
        self.raw = {m: channel.unary_unary(SERVICE + m) for m in ("Predict", "PredictBatch")}
        self.entities = entities
        self.codes: dict[str, Counter[str]] = defaultdict(Counter)
        self.valid_ms: list[float] = []
        self.kinds: list[tuple[str, int, Call]] = [
            ("valid", 40, self.valid),
            ("valid batch of 32", 5, self.valid_batch),
            ("random bytes", 10, self.random_bytes),
            ("truncated request", 5, self.truncated),
            ("batch of 20,000", 1, self.huge_batch),
            ("message over 4 MB", 1, self.oversized),
            ("NaN / inf request values", 8, self.nan_values),
            ("no entities", 5, self.no_entities),
            ("unknown entities", 5, self.unknown_entities),
            ("1 ms deadline", 10, self.short_deadline),
            ("unknown model", 5, self.unknown_model),
            ("empty bytes", 5, self.empty),
        ]

    def _request(self, rng: random.Random, **kw: object) -> inference_pb2.PredictRequest:
        ents = kw.pop("entities", self.entities[rng.randrange(len(self.entities))])
        return inference_pb2.PredictRequest(model=str(kw.pop("model", MODEL)), entities=ents, **kw)  # type: ignore[arg-type]

    async def valid(self, rng: random.Random) -> object:
        t0 = time.perf_counter()
        r = await self.stub.Predict(self._request(rng), timeout=5)
        self.valid_ms.append((time.perf_counter() - t0) * 1000)
        return r

    async def valid_batch(self, rng: random.Random) -> object:
        reqs = [self._request(rng) for _ in range(32)]
        return await self.stub.PredictBatch(inference_pb2.PredictBatchRequest(requests=reqs), timeout=5)

    async def random_bytes(self, rng: random.Random) -> object:
        return await self.raw[rng.choice(["Predict", "PredictBatch"])](rng.randbytes(rng.randint(1, 2000)), timeout=5)

    async def truncated(self, rng: random.Random) -> object:
        data = self._request(rng, request_values={"note": to_value("x" * 50)}).SerializeToString()
        return await self.raw["Predict"](data[: rng.randint(1, len(data) - 1)], timeout=5)

    async def huge_batch(self, rng: random.Random) -> object:
        reqs = [self._request(rng) for _ in range(20_000)]
        return await self.stub.PredictBatch(inference_pb2.PredictBatchRequest(requests=reqs), timeout=10)

    async def oversized(self, rng: random.Random) -> object:
        return await self.stub.Predict(
            self._request(rng, request_values={"blob": to_value("x" * 5_000_000)}), timeout=10
        )

    async def nan_values(self, rng: random.Random) -> object:
        bad = rng.choice([math.nan, math.inf, -math.inf, 1.7976931348623157e308])
        return await self.stub.Predict(self._request(rng, request_values={"amount": raw_value(bad)}), timeout=5)

    async def no_entities(self, rng: random.Random) -> object:
        ents = rng.choice([{}, {"card_id": self.entities[0]["card_id"]}, {"card_id": ""}])
        return await self.stub.Predict(self._request(rng, entities=ents), timeout=5)

    async def unknown_entities(self, rng: random.Random) -> object:
        ents = {"card_id": f"no-such-card-{rng.random()}", "merchant_id": "\x00" * rng.randint(1, 3000)}
        return await self.stub.Predict(self._request(rng, entities=ents), timeout=5)

    async def short_deadline(self, rng: random.Random) -> object:
        return await self.stub.Predict(self._request(rng), timeout=0.001)

    async def unknown_model(self, rng: random.Random) -> object:
        return await self.stub.Predict(self._request(rng, model=rng.choice(["nope", "", "x" * 300])), timeout=5)

    async def empty(self, rng: random.Random) -> object:
        return await self.raw[rng.choice(["Predict", "PredictBatch"])](b"", timeout=5)

    async def caller(self, seed: int, calls: int) -> None:
        rng = random.Random(seed)
        weights = [w for _, w, _ in self.kinds]
        for _ in range(calls):
            name, _, call = rng.choices(self.kinds, weights)[0]
            try:
                await call(rng)
                self.codes[name]["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                self.codes[name][exc.code().name] += 1


async def _fuzz(target: str, entities: list[dict[str, str]], callers: int, calls: int) -> Fuzzer:
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        fuzzer = Fuzzer(ch, entities)
        await asyncio.gather(*(fuzzer.caller(seed, calls) for seed in range(callers)))
        fuzzer.codes["valid after the fuzz"]["OK"] += 0
        try:
            await fuzzer.valid(random.Random(0))
            fuzzer.codes["valid after the fuzz"]["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            fuzzer.codes["valid after the fuzz"][exc.code().name] += 1
    return fuzzer


def run(stack: PrivateStack, workdir: Path, callers: int = 200, calls: int = 20, events: int = 6_000) -> DrillResult:
    result = DrillResult("fuzz-grpc", f"gRPC fuzz, {callers} concurrent callers x {calls} calls")
    pipe = Pipeline(stack, "grpc", workdir)
    try:
        pipe.start_worker()
        valid = sim_messages(events, seed=61)
        pipe.produce(valid)
        pipe.wait_caught_up()
        server = serve_model(pipe)
        t0 = time.monotonic()
        fuzzer = asyncio.run(_fuzz(server.target, entities_of(valid, 500), callers, calls))
        took = time.monotonic() - t0
        pipe.procs.check()  # the server (and worker) still running
        codes = {k: dict(v) for k, v in sorted(fuzzer.codes.items())}
        seen = {c for v in codes.values() for c in v}
        result.figures.update(
            calls=sum(sum(v.values()) for v in codes.values()),
            seconds=round(took, 1),
            status_codes_by_kind=codes,
            valid_calls=len(fuzzer.valid_ms),
            valid_p50_ms=round(percentile(fuzzer.valid_ms, 0.5), 2),
            valid_p99_ms=round(percentile(fuzzer.valid_ms, 0.99), 2),
            server_log_tracebacks=pipe.procs.log("serve").count("Traceback"),
            server_log_lines=len(pipe.procs.log("serve").splitlines()),
        )
        result.bar(not seen & FORBIDDEN, f"forbidden statuses: {sorted(seen & FORBIDDEN)}")
        result.bar(codes["valid after the fuzz"] == {"OK": 1}, "the server did not answer a valid call after the fuzz")
        result.bar(set(codes.get("valid", {})) <= {"OK"}, f"valid calls failed: {codes.get('valid')}")
    finally:
        exits = pipe.procs.stop_all()
    result.bar(all(c == 0 for c in exits.values()), f"a process did not stop cleanly on SIGTERM: {exits}")
    return result
