"""Redis's side of the worker's live writes, kind by kind, in a private Redis (not a test).

    python bench/feature_pipeline/redis_writes.py [--events 20000] [--rate 2500] [--rounds 4] [--out F]

Half the live deficit of the freshness target is Redis's CPU (bench/README.md, items 14-16):
the worker's writes cost it 3-4 times what the hand-written baseline's do. This measures
them apart from Kafka, Faust and the worker's CPU. `profile_processor.py --live RATE` traffic
(1,000 cards at 300 merchants, batches of RATE/20, a flush every RATE/2 events) goes through
the real processor with in-memory state; its dedup claims, tile writes and state saves are
recorded, then replayed through the real Redis stores (`RedisStateStore.claim` and `.save`,
`AsyncRedisOnlineStore.write_tiles`) into a `redis-server` of its own, started as the stack
starts it (append-only file on, no snapshots; no automatic rewrites). Each kind is replayed
alone, in recorded order, into an emptied Redis, and timed by Redis's own CPU (`INFO cpu`, its
main and background threads) and the bytes it appended to its append-only file. The
references, in the same rounds, on the same batches:
* the hand-written baseline's writes (`baseline.py --live`: the card view's changed tiles,
  newest time and expiry, and each event's id in its card's tail hash, one pipeline a batch);
* the floor's (`baseline.py --floor`: only each event's id in its card's tail hash).
Kinds run interleaved, rotated each round; prints the median (min-max) per event and the
ratios to the references, and JSON with `--out`. Stops with one line and status 2 if its
Redis dies.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis

sys.path.insert(0, str(Path(__file__).parent))  # the bench's sibling modules, also when loaded by path

import baseline
import profile_processor as pp
from procs import BenchAbort
from run import write_result

from feature_stream.aggregate import Rec
from feature_stream.processor import InMessage
from feature_stream.state import (
    Claim,
    EntityChanges,
    EntityRef,
    InMemoryStateStore,
    KeyChanges,
    KeyState,
    RedisStateStore,
    StateStore,
)
from featurestore.online import AsyncRedisOnlineStore, TileWrite

PREFIX = "rw"

_Changes = list[tuple[str, dict[str | bytes, str], list[str]]]  # one poll's `Baseline.changes`


class _Recorded:
    """What one live run asked of Redis, in order."""

    def __init__(self) -> None:
        self.claims: list[tuple[list[Claim], int]] = []
        self.tiles: list[list[TileWrite]] = []
        self.saves: list[tuple[dict[str, KeyChanges], EntityChanges]] = []
        # The references' writes per batch: what `baseline.py --live` (and `--floor`) sends.
        self.baseline: list[_Changes] = []
        self.floor: list[_Changes] = []


def record(events: int, rate: float) -> _Recorded:
    """Run live traffic through the processor and keep its Redis calls."""
    got = _Recorded()

    class State(StateStore):  # around the in-memory store, which is compiled and not subclassed
        def __init__(self) -> None:
            self.inner = InMemoryStateStore()

        async def claim(self, claims: Sequence[Claim], retention_ms: int) -> list[str]:
            got.claims.append((list(claims), retention_ms))
            return await self.inner.claim(claims, retention_ms)

        async def load_keys(self, keys: Sequence[str]) -> dict[str, KeyState]:
            return await self.inner.load_keys(keys)

        async def load_entities(self, refs: Sequence[EntityRef]) -> dict[EntityRef, list[Rec]]:
            return await self.inner.load_entities(refs)

        async def save(self, keys: Mapping[str, KeyChanges], changes: EntityChanges) -> None:
            got.saves.append((dict(keys), changes))
            await self.inner.save(keys, changes)

    class Online(pp._EncodingOnline):
        async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
            got.tiles.append(list(writes))
            return len(writes)

    msgs = pp._live(events, rate)
    batch, flush_every = max(1, round(rate / 20)), max(1, round(rate / 2))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(pp._run(pp._defs(None), msgs, batch, tmp, None, flush_every, state=State(), online=Online()))
    batches = [msgs[i : i + batch] for i in range(0, len(msgs), batch)]
    got.baseline, got.floor = baseline_writes(batches), baseline_writes(batches, floor=True)
    return got


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRedis:
    """A `redis-server` of this bench's own, configured as `fti stack` runs it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis_writes: redis-server is not on PATH (scripts/bootstrap installs it)")
        self.dir = tempfile.mkdtemp(prefix="bench-redis-writes-")
        self.port = _free_port()
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir]
        # No automatic rewrite: one during a kind's replay would shrink the file it is timed by
        # (rewrites are measured in the freshness phases: `run.py`).
        args += ["--appendonly", "yes", "--save", "", "--auto-aof-rewrite-percentage", "0", "--daemonize", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.r = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            self.check()
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise BenchAbort(f"the private redis-server on port {self.port} did not answer in 10 s") from None
                time.sleep(0.05)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchAbort(f"the private redis-server (port {self.port}) exited with status {self.proc.returncode}")

    def usage(self) -> tuple[float, int]:
        """(CPU seconds so far, append-only file bytes written so far) of this Redis."""
        self.check()
        cpu = self.r.info("cpu")
        aof = self.r.info("persistence")
        return cpu["used_cpu_user"] + cpu["used_cpu_sys"], int(aof["aof_current_size"])

    def empty(self) -> None:
        """No keys and a fresh append-only file: every kind starts from the same Redis."""
        self.r.flushall()
        self.r.bgrewriteaof()
        while self.r.info("persistence")["aof_rewrite_in_progress"]:
            self.check()
            time.sleep(0.02)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


Replay = Callable[[str, _Recorded], Coroutine[Any, Any, None]]


async def _state_calls(url: str, calls: Callable[[RedisStateStore], Iterator[Awaitable[Any]]]) -> None:
    store = RedisStateStore(aredis.Redis.from_url(url), PREFIX)
    for call in calls(store):
        await call
    await store.close()


async def _claims(url: str, got: _Recorded) -> None:
    await _state_calls(url, lambda store: (store.claim(claims, ms) for claims, ms in got.claims))


async def _saves(url: str, got: _Recorded) -> None:
    await _state_calls(url, lambda store: (store.save(keys, changes) for keys, changes in got.saves))


async def _tiles(url: str, got: _Recorded) -> None:
    online = AsyncRedisOnlineStore.from_url(url, prefix=PREFIX)
    for writes in got.tiles:
        await online.write_tiles(writes)
    await online.close()


class _Consumed:
    """A recorded message as the baseline reads a consumed one (key, value, timestamp)."""

    def __init__(self, msg: InMessage) -> None:
        self._msg = msg

    def key(self) -> bytes | None:
        return self._msg.key

    def value(self) -> bytes:
        return self._msg.value

    def timestamp(self) -> tuple[int, int]:
        return 1, self._msg.timestamp_ms


def _card_view() -> Any:
    return next(v for v in pp._defs(None).views if v.name == "card_activity")


def baseline_writes(msgs: list[list[InMessage]], floor: bool = False) -> list[_Changes]:
    """What `baseline.py --live` (`--floor`) sends, poll by poll, for the same batches (built
    here, not while Redis is timed; its client is not connected before a send)."""
    base = baseline.Baseline(_card_view(), PREFIX, redis.Redis(), live=True, floor=floor)
    out = []
    for batch in msgs:
        dirty: dict[str, tuple[set[str], set[str]]] = {}
        for msg in batch:
            base.apply(_Consumed(msg), dirty)
        out.append(base.changes(dirty))
    return out


def _sent_by_baseline(writes: Callable[[_Recorded], list[_Changes]]) -> Replay:
    async def replay(url: str, got: _Recorded) -> None:
        base = baseline.Baseline(_card_view(), PREFIX, redis.Redis.from_url(url), live=True)
        for batch in writes(got):
            base.send(batch)
        base.r.close()

    return replay


KINDS: dict[str, Replay] = {
    "claims": _claims,
    "tile writes": _tiles,
    "state saves": _saves,
    "floor": _sent_by_baseline(lambda got: got.floor),
    "baseline": _sent_by_baseline(lambda got: got.baseline),
}


def measure(srv: PrivateRedis, got: _Recorded, events: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Per kind, per round: (Redis CPU µs, append-only bytes) per event."""
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    names = list(KINDS)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            srv.empty()
            cpu0, aof0 = srv.usage()
            asyncio.run(KINDS[name](srv.url, got))
            cpu1, aof1 = srv.usage()
            out[name].append(((cpu1 - cpu0) / events * 1e6, (aof1 - aof0) / events))
        print(f"  round {i + 1}/{rounds} done", flush=True)
    return out


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2), "max": round(max(xs), 2)}


def summarize(runs: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Per kind: CPU and append-only bytes per event, and the CPU's ratio to each reference;
    `worker, all kinds` sums the worker's three kinds round by round."""
    kinds = ("claims", "tile writes", "state saves")
    rounds = len(runs["floor"])
    cpu = {name: [c for c, _ in xs] for name, xs in runs.items()}
    cpu["worker, all kinds"] = [sum(runs[k][i][0] for k in kinds) for i in range(rounds)]
    refs = {ref: statistics.median(cpu[ref]) for ref in ("baseline", "floor")}
    out: dict[str, Any] = {}
    for name, xs in cpu.items():
        out[name] = {"cpu_us_per_event": _stats(xs)}
        if name in runs:
            out[name]["aof_bytes_per_event"] = _stats([a for _, a in runs[name]])
        for ref, value in refs.items():
            out[name][f"cpu_x_{ref}"] = round(statistics.median(xs) / max(value, 1e-9), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=2500.0, help="The live rate the traffic is stamped at.")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=None, help="Write the figures as JSON here.")
    args = ap.parse_args()
    print(f"recording {args.events:,} live events at {args.rate:,.0f}/s through the processor", flush=True)
    got = record(args.events, args.rate)
    print(
        f"  {sum(len(c) for c, _ in got.claims):,} claims in {len(got.claims)} calls, "
        f"{sum(len(w) for w in got.tiles):,} tile writes in {len(got.tiles)} sends, {len(got.saves)} state saves",
        flush=True,
    )
    srv = PrivateRedis()
    try:
        runs = measure(srv, got, args.events, args.rounds)
    finally:
        srv.close()
    summary = summarize(runs)
    for name, s in summary.items():
        cpu = s["cpu_us_per_event"]
        aof = s.get("aof_bytes_per_event")
        line = f"{name:>17}: Redis {cpu['median']:6.1f} us CPU per event ({cpu['min']:.1f}-{cpu['max']:.1f})"
        line += f", {s['cpu_x_baseline']:.2f}x the baseline's, {s['cpu_x_floor']:.2f}x the floor's"
        if aof is not None:
            line += f", {aof['median']:,.0f} B appended per event"
        print(line, flush=True)
    if args.out:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_result(
            args.out, {"when": when, "events": args.events, "rate": args.rate, "summary": summary, "rounds": runs}
        )


if __name__ == "__main__":
    main()
