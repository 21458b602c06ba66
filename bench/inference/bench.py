"""Inference benchmark (not a test): `fti serve` against a hand-written server and an echo server, same run.

Measures
  1. Predict's throughput (closed loop, N callers) and p50/p99 latency (1 and N callers) next to
     a minimal hand-written grpc.aio server (`handwritten_server.py`: one Redis round trip of the
     same tiles hashes, windows merged inline, the same LightGBM model from the same artefact,
     `Booster.predict`) and a bare echo server answering messages of the same sizes, the three
     interleaved over several rounds, with the ratios and each server's CPU per request;
     targets: Predict / hand-written >= 0.9 at 16 callers, Predict p99 <= 3 ms at 1 caller;
  2. time from a model event (alias move) to the new version serving;
  3. p99 while the alias moves every 0.5 s, against steady state at the same fixed rate.

The features are the demo's two views (examples/fraud/features.yaml) written in the tile layout
the server reads, 20 transactions per card over the last 50 minutes, so every request evaluates
real windows. The servers run as their own processes (the inference one through the real
`fti serve`); the load comes from this process; a server that dies stops the bench with a
non-zero status. Needs the Kafka and Redis of `fti stack up` (FTI_KAFKA_BOOTSTRAP_SERVERS,
FTI_REDIS_URL), or `--private-redis` for a redis-server of its own. Prints a table, then JSON.

    python bench/inference/bench.py [--seconds 5] [--rounds 3] [--concurrency 16] [--private-redis]
                                    [--no-swaps] [--profile serve.prof] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
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
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Call, Result, closed_loop, open_loop

from feature_stream.backfill import tile_writes
from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef, load_definitions
from featurestore.online import RedisOnlineStore
from featurestore.tiles import Event
from fti.v1 import inference_pb2, inference_pb2_grpc
from fti_core.settings import FtiSettings
from fti_core.topics import TopicSpec
from registry.events import KafkaModelEventSink, ensure_topic
from registry.models import FeatureRef, ModelRegistry

MODEL = "bench"
DEFINITIONS = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "features.yaml"
VIEWS = (("card_activity", 1), ("merchant_activity", 1))  # the demo's views, in the model's feature order
N_CARDS, N_MERCHANTS, EVENTS_PER_CARD = 1000, 100, 20
FUTURE_SKEW_MS = 5_000


def _views() -> list[FeatureViewDef]:
    defs = load_definitions(DEFINITIONS)
    return [defs.view(name, version) for name, version in VIEWS]


FEATURES = [FeatureRef(v.name, v.version, f.name, v.entity) for v in _views() for f in v.features]


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


def _events(now: int) -> dict[str, dict[str, list[Event]]]:
    """Transactions of the last 50 minutes (none newer than 1 s), per view, per entity, in order."""
    rng = random.Random(7)
    by_view: dict[str, dict[str, list[Event]]] = {"card_activity": {}, "merchant_activity": {}}
    for card in range(N_CARDS):
        for i in range(EVENTS_PER_CARD):
            merchant = f"m{rng.randrange(N_MERCHANTS)}"
            values: dict[str, float | str] = {"amount": round(rng.expovariate(1 / 50), 2), "merchant_id": merchant}
            event = Event(now - rng.randrange(1_000, 3_000_000), f"e{card}-{i}", values)
            by_view["card_activity"].setdefault(f"c{card}", []).append(event)
            by_view["merchant_activity"].setdefault(merchant, []).append(event)
    for entities in by_view.values():
        for events in entities.values():
            events.sort(key=lambda e: e.order)
    return by_view


def _write_features(url: str, prefix: str) -> None:
    """The demo views' online state in the tile layout, as the worker (or backfill) writes it."""
    store = RedisOnlineStore.from_url(url, prefix)
    views = _views()
    store.register_views(views)
    by_view = _events(int(time.time() * 1000))
    for view in views:
        entities = {key: EntityEvents(events) for key, events in by_view[view.name].items()}
        store.write_tiles(tile_writes(view, entities, FUTURE_SKEW_MS))


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


class ServerDied(RuntimeError):
    """A server this bench started exited while it was being measured."""


class _Watch:
    """The server processes this bench started; `check()` after every phase."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServerDied(f"the {name} server exited with status {proc.returncode} during the run")


SERVERS = ("echo", "handwritten", "predict")
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU seconds of a server process so far (Linux /proc)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


async def _compare(calls: dict[str, Call], args: argparse.Namespace, watch: _Watch) -> dict[str, Any]:
    """The servers' phases interleaved over several rounds, so a noisy neighbour hits all alike."""
    for call in calls.values():
        await closed_loop(call, args.concurrency, 1.0)  # warm-up
    watch.check()
    single: dict[str, list[Result]] = {name: [] for name in calls}
    loaded: dict[str, list[Result]] = {name: [] for name in calls}
    cpu_s = dict.fromkeys(calls, 0.0)  # each server's CPU during its loaded phases
    for _ in range(args.rounds):
        for name, call in calls.items():
            single[name].append(await closed_loop(call, 1, args.seconds / 2))
            watch.check()
            before = _cpu_s(watch.procs[name])
            loaded[name].append(await closed_loop(call, args.concurrency, args.seconds))
            cpu_s[name] += _cpu_s(watch.procs[name]) - before
            watch.check()
    key = f"closed_loop_{args.concurrency}"
    out: dict[str, Any] = {
        name: {"one_caller": _figures(_merge(single[name])), key: _figures(_merge(loaded[name]))} for name in calls
    }
    for name in calls:  # the figure least moved by a busy machine: server CPU per answered request
        answered = sum(len(r.latencies_s) for r in loaded[name])
        out[name][key]["server_cpu_us_per_request"] = round(cpu_s[name] / answered * 1e6, 1) if answered else None
    out["rounds"] = args.rounds
    out["throughput_ratio"] = _ratio(out["predict"][key]["rps"], out["echo"][key]["rps"])
    out["throughput_ratio_handwritten"] = _ratio(out["predict"][key]["rps"], out["handwritten"][key]["rps"])
    out["throughput_ratio_handwritten_one_caller"] = _ratio(
        out["predict"]["one_caller"]["rps"], out["handwritten"]["one_caller"]["rps"]
    )
    out["p50_ratio_one_caller"] = _ratio(out["predict"]["one_caller"]["p50_ms"], out["echo"]["one_caller"]["p50_ms"])
    out["targets"] = {
        "predict/handwritten at 16 callers >= 0.9": out["throughput_ratio_handwritten"] >= 0.9,
        "predict p99 at 1 caller <= 3 ms": out["predict"]["one_caller"]["p99_ms"] <= 3.0,
    }
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
    predict: Call, registry: ModelRegistry, versions: list[int], args: argparse.Namespace, watch: _Watch
) -> dict[str, Any]:
    """Steady and swapping windows interleaved over several rounds, so noise hits both alike."""
    steady, during = Result(), Result()
    targets = itertools.cycle(versions[1:] + versions[:1])  # each move is to another version
    delays: list[float] = []
    for _ in range(args.rounds):
        await open_loop(predict, args.rate, args.seconds, steady)
        watch.check()
        delays += await _swapping(predict, registry, targets, args, during)
        watch.check()
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


@contextlib.contextmanager
def _private_redis(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this bench's own, on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("--private-redis needs redis-server on the PATH")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with _process([*args, "--dir", str(workdir)], dict(os.environ), workdir / "redis.log") as proc:
        client = redis.Redis(port=port)
        for _ in range(100):
            if proc.poll() is not None:
                raise ServerDied(f"the private redis-server exited with status {proc.returncode}")
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0", proc


async def _mismatches(channels: dict[str, grpc.aio.Channel], requests: list[inference_pb2.PredictRequest]) -> int:
    """Requests the hand-written server answers differently from Predict (score or a feature value):
    the two compute the same thing, so 0 (a window boundary passing between the two calls aside)."""
    predict, hand = (inference_pb2_grpc.InferenceServiceStub(channels[n]) for n in ("predict", "handwritten"))
    differ = 0
    for request in requests:
        a, b = await predict.Predict(request, timeout=5), await hand.Predict(request, timeout=5)
        values = zip([a.score, *(f.value for f in a.features)], [b.score, *(f.value for f in b.features)], strict=True)
        differ += not all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in values)
    return differ


async def _wait_answering(call: Call, proc: subprocess.Popen[bytes], name: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise ServerDied(f"the {name} server exited with status {proc.returncode} before answering")
        try:
            await call()
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the {name} server never answered")


def _handwritten_cmd(port: int, redis_url: str, prefix: str, registry: ModelRegistry, workdir: Path) -> list[str]:
    record = registry.get(MODEL, 1)
    artefact = workdir / "model.txt"  # the bytes of the version `fti serve` starts with, verified
    artefact.write_bytes(registry.load_artefact(MODEL, record.version))
    refs = [f"{n}:{v}" for n, v in VIEWS]
    script = str(Path(__file__).parent / "handwritten_server.py")
    return [sys.executable, script, str(port), redis_url, prefix, str(artefact), str(DEFINITIONS), MODEL, "1", *refs]


async def _measure(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    registry: ModelRegistry,
    versions: list[int],
    watched: dict[str, subprocess.Popen[bytes]],
) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
    requests, watch, ports = _requests(), _Watch(), {name: _free_port() for name in SERVERS}
    watch.procs.update(watched)
    fti = [shutil.which("fti") or str(Path(sys.executable).parent / "fti")]
    if args.profile is not None:  # the same command under cProfile, stats written when it drains
        fti = [sys.executable, "-m", "cProfile", "-o", str(args.profile.resolve()), *fti]
    serve = [*fti, "serve", "--model", MODEL, "--port", str(ports["predict"]), "--metrics-port", "0"]
    serve += ["--redis-prefix", env["FTI_REDIS_PREFIX"]]
    async with contextlib.AsyncExitStack() as stack:
        watch.procs["predict"] = stack.enter_context(_process(serve, env, workdir / "predict.log"))
        await _wait_serving(ports["predict"], watch.procs["predict"])
        channels = {
            name: await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
            for name, port in ports.items()
        }
        sample = await inference_pb2_grpc.InferenceServiceStub(channels["predict"]).Predict(requests[0], timeout=5)
        echo = [
            sys.executable,
            str(Path(__file__).parent / "echo_server.py"),
            str(ports["echo"]),
            str(sample.ByteSize()),
        ]
        hand = _handwritten_cmd(ports["handwritten"], env["FTI_REDIS_URL"], env["FTI_REDIS_PREFIX"], registry, workdir)
        watch.procs["echo"] = stack.enter_context(_process(echo, env, workdir / "echo.log"))
        watch.procs["handwritten"] = stack.enter_context(_process(hand, env, workdir / "handwritten.log"))
        calls = {
            "echo": _echo_call(channels["echo"], requests),
            "handwritten": _predict_call(channels["handwritten"], requests),
            "predict": _predict_call(channels["predict"], requests),
        }
        for name in ("echo", "handwritten"):
            await _wait_answering(calls[name], watch.procs[name], name)
        compare = await _compare(calls, args, watch)
        compare["score_mismatches_of_100"] = await _mismatches(channels, requests[:100])
        swaps = None if args.no_swaps else await _swaps(calls["predict"], registry, versions, args, watch)
    return compare, swaps, sample.ByteSize()


async def _run(
    args: argparse.Namespace, settings: FtiSettings, workdir: Path, watched: dict[str, subprocess.Popen[bytes]]
) -> dict[str, Any]:
    prefix, topic = f"fti-bench-{uuid.uuid4().hex[:8]}", f"fti-bench-models-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(topic, 1, 1)
    ensure_topic(settings, spec)
    sink = KafkaModelEventSink(settings, topic=spec)
    registry = ModelRegistry.from_uri(str(workdir / "registry"), events=sink)
    versions = _publish(registry, args.versions)
    registry.move_alias(MODEL, "production", versions[0], actor="bench")
    redis_url = settings.redis_url.get_secret_value()
    env = {
        **os.environ,
        "FTI_DATA_DIR": str(workdir),
        "FTI_MODELS_TOPIC": topic,
        "FTI_REDIS_URL": redis_url,
        "FTI_REDIS_PREFIX": prefix,
        "FTI_SERVE_HOST": "127.0.0.1",
        "FTI_DEFINITIONS_PATH": str(workdir / "none.yaml"),
        "FTI_SERVE_REDIS_COALESCE": "false" if args.no_coalesce else "true",
    }
    try:
        _write_features(redis_url, prefix)
        compare, swaps, response_size = await _measure(args, env, workdir, registry, versions, watched)
    except Exception:
        for name in SERVERS:
            with contextlib.suppress(OSError):
                print(f"--- {name} log\n" + (workdir / f"{name}.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        sink.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    sizes = {"request_bytes": _requests()[0].ByteSize(), "response_bytes": response_size}
    return {"messages": sizes, "latency_and_throughput": compare, "hot_swap": swaps}


def _print(result: dict[str, Any], concurrency: int) -> None:
    cmp, swap = result["latency_and_throughput"], result["hot_swap"]
    key = f"closed_loop_{concurrency}"
    print(
        f"messages: request {result['messages']['request_bytes']} B, response {result['messages']['response_bytes']} B"
    )
    head = f"{'':12}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}   |{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
    print(f"{'':12}{'1 caller':^27}   |{f'{concurrency} callers':^27}\n{head}")
    for name in SERVERS:
        one, loaded = cmp[name]["one_caller"], cmp[name][key]
        print(
            f"{name:12}{one['p50_ms']:>9.3f}{one['p99_ms']:>9.3f}{one['rps']:>9.0f}   |"
            f"{loaded['p50_ms']:>9.3f}{loaded['p99_ms']:>9.3f}{loaded['rps']:>9.0f}"
        )
    print(f"requests scored differently by predict and handwritten: {cmp['score_mismatches_of_100']} of 100")
    cpu = {name: cmp[name][key]["server_cpu_us_per_request"] for name in SERVERS}
    print("server CPU per request at load (us): " + ", ".join(f"{n} {c}" for n, c in cpu.items()))
    print(
        f"throughput predict/handwritten = {cmp['throughput_ratio_handwritten']:.2f} at {concurrency} callers "
        f"(target >= 0.9), {cmp['throughput_ratio_handwritten_one_caller']:.2f} at 1 caller; "
        f"predict/echo = {cmp['throughput_ratio']:.2f}; predict p99 at 1 caller "
        f"{cmp['predict']['one_caller']['p99_ms']:.2f} ms (target <= 3)"
    )
    if swap is not None:
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
    parser.add_argument("--profile", type=Path, default=None, help="Run fti serve under cProfile, stats here.")
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="Run a redis-server of its own (no other client's Lua scripts or scans in front of the reads).",
    )
    parser.add_argument("--no-swaps", action="store_true", help="Skip the hot-swap phases.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON figures here.")
    args = parser.parse_args()
    settings = FtiSettings()
    watched: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="fti-bench-") as tmp, contextlib.ExitStack() as stack:
        if args.private_redis:
            url, watched["redis"] = stack.enter_context(_private_redis(Path(tmp)))
            settings = settings.model_copy(update={"redis_url": SecretStr(url)})
        try:
            result = asyncio.run(_run(args, settings, Path(tmp), watched))
        except ServerDied as exc:
            sys.exit(f"bench stopped: {exc}")
    result["redis"] = "private" if args.private_redis else "shared"
    _print(result, args.concurrency)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
