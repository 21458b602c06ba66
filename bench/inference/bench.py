"""Inference benchmark (not a test): `fti serve` against a bare grpc.aio echo server, same run.

Measures
  1. Predict p50/p99 latency (one caller) and max requests/s (closed loop), next to an echo
     server answering messages of the same sizes, with the ratios;
  2. time from a model event (alias move) to the new version serving;
  3. p99 while the alias moves every 0.5 s, against steady state at the same fixed rate
     (steady and swapping windows interleaved over the rounds, ~3,000 samples each).

Both servers run as their own processes (the inference one through the real `fti serve`);
the load comes from this process. Needs the Kafka and Redis of `fti stack up`
(FTI_KAFKA_BOOTSTRAP_SERVERS, FTI_REDIS_URL). Prints a table, then JSON.

    python bench/inference/bench.py [--seconds 5] [--concurrency 16] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import lightgbm as lgb
import numpy as np
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Call, Result, closed_loop, open_loop

from featurestore.online import OnlineRow, RedisOnlineStore
from fti.v1 import inference_pb2, inference_pb2_grpc
from fti_core.settings import FtiSettings
from fti_core.topics import TopicSpec
from registry.events import KafkaModelEventSink, ensure_topic
from registry.models import FeatureRef, ModelRegistry

MODEL = "bench"
CARD = ("txn_count_10m", "amount_sum_10m", "amount_max_1h", "amount_mean_1h", "merchant_distinct_1h", "amount_last")
MERCHANT = ("txn_count_1h", "amount_mean_1h", "amount_min_1h")
FEATURES = [FeatureRef("card_activity", 1, f, "card_id") for f in CARD] + [
    FeatureRef("merchant_activity", 1, f, "merchant_id") for f in MERCHANT
]
N_CARDS, N_MERCHANTS = 1000, 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model_text(seed: int) -> bytes:
    """A fraud-sized booster: 9 features, 100 trees of 31 leaves."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, len(FEATURES)))
    y = (x[:, 0] + x[:, 2] - x[:, 7] + rng.normal(size=5000) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed}
    return str(lgb.train(params, lgb.Dataset(x, y), num_boost_round=100).model_to_string()).encode()


def _publish(registry: ModelRegistry, count: int) -> list[int]:
    versions = []
    for seed in range(count):
        record = registry.publish(
            MODEL,
            _model_text(seed),
            features=FEATURES,
            entities=("card_id", "merchant_id"),
            snapshot_id="bench",
            code_version="bench",
            params={},
            metrics={},
            task="binary",
        )
        versions.append(record.version)
    return versions


def _write_features(url: str, prefix: str) -> None:
    store = RedisOnlineStore.from_url(url, prefix)
    now, rng = int(time.time() * 1000), random.Random(7)
    rows = [
        OnlineRow("card_activity", 1, f"c{i}", now, {f: rng.random() * 100 for f in CARD}, 86_400_000)
        for i in range(N_CARDS)
    ]
    rows += [
        OnlineRow("merchant_activity", 1, f"m{i}", now, {f: rng.random() * 100 for f in MERCHANT}, 86_400_000)
        for i in range(N_MERCHANTS)
    ]
    store.write(rows)


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        yield proc
    finally:
        proc.terminate()  # SIGTERM: the inference server drains gracefully
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see its log")
            with contextlib.suppress(grpc.aio.AioRpcError):
                got = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if got.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("server never became SERVING")


def _requests() -> list[inference_pb2.PredictRequest]:
    rng = random.Random(1)
    return [
        inference_pb2.PredictRequest(
            model=MODEL,
            entities={"card_id": f"c{rng.randrange(N_CARDS)}", "merchant_id": f"m{rng.randrange(N_MERCHANTS)}"},
        )
        for _ in range(512)
    ]


def _predict_call(channel: grpc.aio.Channel, requests: list[inference_pb2.PredictRequest]) -> Call:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    counter = iter(range(1 << 62))

    async def call() -> int:
        response = await stub.Predict(requests[next(counter) % len(requests)], timeout=5)
        return int(response.model_version)

    return call


def _echo_call(channel: grpc.aio.Channel, requests: list[inference_pb2.PredictRequest]) -> Call:
    # The client does the same protobuf work as for Predict, so only the server side differs.
    method = channel.unary_unary(
        "/bench.Echo/Echo",
        request_serializer=inference_pb2.PredictRequest.SerializeToString,
        response_deserializer=inference_pb2.PredictResponse.FromString,
    )
    counter = iter(range(1 << 62))

    async def call() -> int:
        await method(requests[next(counter) % len(requests)], timeout=5)
        return 0

    return call


def _figures(result: Result) -> dict[str, float]:
    return {
        "rps": round(result.rps, 1),
        "p50_ms": round(result.ms(50), 3),
        "p99_ms": round(result.ms(99), 3),
        "errors": result.errors,
    }


def _merge(results: list[Result]) -> Result:
    merged = Result(errors=sum(r.errors for r in results), elapsed_s=sum(r.elapsed_s for r in results))
    for r in results:
        merged.latencies_s += r.latencies_s
    return merged


async def _compare(predict: Call, echo: Call, args: argparse.Namespace) -> dict[str, Any]:
    """Echo and Predict phases interleaved over several rounds, so a noisy neighbour hits both."""
    calls = {"echo": echo, "predict": predict}
    for call in calls.values():
        await closed_loop(call, args.concurrency, 1.0)  # warm-up
    single: dict[str, list[Result]] = {name: [] for name in calls}
    loaded: dict[str, list[Result]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            single[name].append(await closed_loop(call, 1, args.seconds / 2))
            loaded[name].append(await closed_loop(call, args.concurrency, args.seconds))
    key = f"closed_loop_{args.concurrency}"
    out: dict[str, Any] = {
        name: {"one_caller": _figures(_merge(single[name])), key: _figures(_merge(loaded[name]))} for name in calls
    }
    out["rounds"] = args.rounds
    out["throughput_ratio"] = round(out["predict"][key]["rps"] / out["echo"][key]["rps"], 3)
    out["p50_ratio_one_caller"] = round(out["predict"]["one_caller"]["p50_ms"] / out["echo"]["one_caller"]["p50_ms"], 2)
    return out


async def _swapping(
    predict: Call, registry: ModelRegistry, targets: Iterator[int], args: argparse.Namespace, during: Result
) -> list[float]:
    """Fixed-rate load for `args.seconds` while the alias moves every `args.swap_every` seconds."""
    load = asyncio.create_task(open_loop(predict, args.rate, args.seconds, during))
    delays = []
    await asyncio.sleep(0.3)
    while not load.done():
        version, moved = next(targets), time.perf_counter()
        await asyncio.to_thread(registry.move_alias, MODEL, "production", version, actor="bench")
        while not (during.labels and during.labels[-1] == version):  # noqa: ASYNC110 - polling a plain list
            await asyncio.sleep(0.002)
        delays.append(time.perf_counter() - moved)
        await asyncio.sleep(max(0.0, args.swap_every - (time.perf_counter() - moved)))
    await load
    return delays


async def _swaps(
    predict: Call, registry: ModelRegistry, versions: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Steady and swapping windows interleaved over several rounds, so noise hits both alike."""
    steady, during = Result(), Result()
    targets = itertools.cycle(versions[1:] + versions[:1])  # each move is to another version
    delays: list[float] = []
    for _ in range(args.rounds):
        await open_loop(predict, args.rate, args.seconds, steady)
        delays += await _swapping(predict, registry, targets, args, during)
    ordered = sorted(delays)
    return {
        "rate": args.rate,
        "swaps": len(delays),
        "event_to_serving_ms": {
            "p50": round(ordered[len(ordered) // 2] * 1000, 1),
            "max": round(ordered[-1] * 1000, 1),
        },
        "steady": _figures(steady),
        "during_swaps": _figures(during),
        "p99_ratio": round(during.ms(99) / steady.ms(99), 2),
    }


async def _run(args: argparse.Namespace, settings: FtiSettings, workdir: Path) -> dict[str, Any]:
    prefix, topic = f"fti-bench-{uuid.uuid4().hex[:8]}", f"fti-bench-models-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(topic, 1, 1)
    ensure_topic(settings, spec)
    sink = KafkaModelEventSink(settings, topic=spec)
    registry = ModelRegistry.from_uri(str(workdir / "registry"), events=sink)
    versions = _publish(registry, args.versions)
    registry.move_alias(MODEL, "production", versions[0], actor="bench")
    redis_url = settings.redis_url.get_secret_value()
    _write_features(redis_url, prefix)
    requests = _requests()
    response_size = 0
    port, echo_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "FTI_DATA_DIR": str(workdir),
        "FTI_MODELS_TOPIC": topic,
        "FTI_SERVE_HOST": "127.0.0.1",
        "FTI_DEFINITIONS_PATH": str(workdir / "none.yaml"),
        "FTI_SERVE_REDIS_COALESCE": "false" if args.no_coalesce else "true",
    }
    fti = shutil.which("fti") or str(Path(sys.executable).parent / "fti")
    serve = [fti, "serve", "--model", MODEL, "--port", str(port), "--metrics-port", "0", "--redis-prefix", prefix]
    try:
        with _process(serve, env, workdir / "serve.log") as server:
            await _wait_serving(port, server)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                predict = _predict_call(channel, requests)
                sample = await inference_pb2_grpc.InferenceServiceStub(channel).Predict(requests[0], timeout=5)
                response_size = sample.ByteSize()
                echo_cmd = [
                    sys.executable,
                    str(Path(__file__).parent / "echo_server.py"),
                    str(echo_port),
                    str(response_size),
                ]
                with _process(echo_cmd, env, workdir / "echo.log"):
                    await asyncio.sleep(1.0)
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel:
                        compare = await _compare(predict, _echo_call(echo_channel, requests), args)
                swaps = await _swaps(predict, registry, versions, args)
    except Exception:
        print((workdir / "serve.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        sink.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    sizes = {"request_bytes": requests[0].ByteSize(), "response_bytes": response_size}
    return {"messages": sizes, "latency_and_throughput": compare, "hot_swap": swaps}


def _print(result: dict[str, Any], concurrency: int) -> None:
    cmp, swap = result["latency_and_throughput"], result["hot_swap"]
    key = f"closed_loop_{concurrency}"
    print(
        f"messages: request {result['messages']['request_bytes']} B, response {result['messages']['response_bytes']} B"
    )
    print(f"{'':10}{'p50 ms (1 caller)':>20}{'p99 ms (1 caller)':>20}{f'max req/s ({concurrency} callers)':>28}")
    for name in ("echo", "predict"):
        one, loaded = cmp[name]["one_caller"], cmp[name][key]
        print(f"{name:10}{one['p50_ms']:>20.3f}{one['p99_ms']:>20.3f}{loaded['rps']:>28.0f}")
    print(
        f"throughput predict/echo = {cmp['throughput_ratio']:.2f} (goal >= 0.6); "
        f"p50 predict/echo = {cmp['p50_ratio_one_caller']:.2f}"
    )
    ev = swap["event_to_serving_ms"]
    print(f"alias move -> new version serving: p50 {ev['p50']} ms, max {ev['max']} ms over {swap['swaps']} swaps")
    print(
        f"p99 at {swap['rate']} req/s: steady {swap['steady']['p99_ms']:.2f} ms, during swaps "
        f"{swap['during_swaps']['p99_ms']:.2f} ms, ratio {swap['p99_ratio']:.2f} (goal <= 2); "
        f"errors {swap['steady']['errors'] + swap['during_swaps']['errors']}"
    )
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of each measured phase.")
    parser.add_argument("--concurrency", type=int, default=16, help="Callers of the closed-loop phase.")
    parser.add_argument("--rate", type=float, default=200.0, help="Fixed request rate of the swap phases.")
    parser.add_argument("--versions", type=int, default=4, help="Versions the alias cycles through.")
    parser.add_argument("--swap-every", type=float, default=0.5, help="Seconds between alias moves.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (echo/predict; steady/swapping).")
    parser.add_argument("--no-coalesce", action="store_true", help="Serve with FTI_SERVE_REDIS_COALESCE=false.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON figures here.")
    args = parser.parse_args()
    settings = FtiSettings()
    with tempfile.TemporaryDirectory(prefix="fti-bench-") as tmp:
        result = asyncio.run(_run(args, settings, Path(tmp)))
    _print(result, args.concurrency)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
