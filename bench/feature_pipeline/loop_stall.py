"""Event-loop stalls of the worker during a catch-up (not a test): re-keyed fetches whole vs in chunks.

    python bench/feature_pipeline/loop_stall.py --events 60000 --repeats 2

Produces a backlog once, then runs a worker over it from the start for each variant, in turn:
`whole` handles each re-keyed fetch in one go (the worker before chunking), `chunked` in runs
of `feature_stream.app.REKEYED_CHUNK_ITEMS` items. For each run it reads the worker's
`fti_features_event_loop_stall_seconds` histogram (how late the loop ran its 1 s heartbeat)
and prints the longest stall bucket, stalls over 1 s, and events/s. Stops with an error if a
worker it started dies.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench/feature_pipeline/run.py")
assert _spec and _spec.loader
_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_run)
VARIANTS = {"whole": 10**12, "chunked": None}  # None: the worker's own REKEYED_CHUNK_ITEMS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stalls(port: int) -> tuple[float, int, int]:
    """(longest stall bucket's upper bound in s, heartbeats, stalls over 1 s) from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets = [
        (float("inf") if le == "+Inf" else float(le), float(n))
        for le, n in re.findall(r'fti_features_event_loop_stall_seconds_bucket\{le="([^"]+)"\} (\S+)', text)
    ]
    total = max(n for _, n in buckets)
    longest = min(le for le, n in buckets if n >= total)
    over_1s = int(total - next(n for le, n in buckets if le == 1.0))
    return longest, int(total), over_1s


def _clean(bootstrap: str, env: dict[str, str], topics: list[str]) -> None:
    """What one run left: its topics, its Redis keys, its offline store."""
    _run.AdminClient({"bootstrap.servers": bootstrap}).delete_topics(topics)
    r = redis.Redis.from_url(env.get("FTI_REDIS_URL", "redis://localhost:6379/0"))
    keys = list(r.scan_iter(match=f"{env['FTI_REDIS_PREFIX']}:*", count=10_000))
    for i in range(0, len(keys), 5000):
        r.unlink(*keys[i : i + 5000])
    shutil.rmtree(env["FTI_OFFLINE_STORE_URI"], ignore_errors=True)


def run_one(bootstrap: str, topic: str, total: int, partitions: int, chunk: int | None) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    env = dict(os.environ)
    env.update(
        FTI_EVENTS_TOPIC=topic,
        FTI_DLQ_TOPIC=f"{topic}-dlq",
        FTI_WORKER_APP_ID=f"stall-app-{tag}",
        FTI_REDIS_PREFIX=f"stall-{tag}",
        FTI_OFFLINE_STORE_URI=tempfile.mkdtemp(prefix="stall-offline-"),
        FTI_DEFINITIONS_PATH=str(ROOT / "examples/fraud/features.yaml"),
        FTI_EVENTS_TOPIC_PARTITIONS=str(partitions),
        FTI_WORKER_METRICS_PORT=str(port),
        FTI_WORKER_COMMIT_INTERVAL_S="0.2",
    )
    patch = f"import feature_stream.app as a; a.REKEYED_CHUNK_ITEMS = {chunk}; " if chunk else ""
    code = patch + "from feature_stream.cli import features; features(['worker', '--no-supervise'])"
    log = open(Path(tempfile.gettempdir()) / f"stall-{tag}.log", "wb")  # noqa: SIM115 - lives as long as the worker
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
    group = env["FTI_WORKER_APP_ID"]
    topics = [topic, f"{group}-{topic}-rekeyed"]
    t0 = time.monotonic()
    offsets = _run._Offsets(bootstrap, group)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"worker died (exit {proc.returncode}); log in {log.name}")
            raw_done, _ = offsets.progress(topics[:1])
            done, high = offsets.progress(topics)
            if raw_done >= total and done >= high:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        longest, beats, over_1s = _stalls(port)
    finally:
        offsets.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        _clean(bootstrap, env, [f"{group}-{topic}-rekeyed", env["FTI_DLQ_TOPIC"]])
    return {
        "longest_stall_le_s": longest,
        "heartbeats": beats,
        "stalls_over_1s": over_1s,
        "events_per_s": total / elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench/feature_pipeline/loop_stall.json"))
    args = ap.parse_args()
    bootstrap = os.environ.get("FTI_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    topic = f"stall-raw-{uuid.uuid4().hex[:8]}"
    total = _run.produce_backlog(bootstrap, topic, args.events, args.partitions)
    print(f"produced {total} messages to {topic} ({args.partitions} partitions)")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    try:
        for i in range(args.repeats):
            for name, chunk in VARIANTS.items():  # interleaved: the machine's load hits both alike
                r = run_one(bootstrap, topic, total, args.partitions, chunk)
                results[name].append(r)
                print(
                    f"run {i + 1} {name:8s} longest stall <= {r['longest_stall_le_s']} s, "
                    f"{r['stalls_over_1s']} of {r['heartbeats']} heartbeats late by > 1 s, "
                    f"{r['events_per_s']:,.0f} events/s"
                )
    finally:
        _run.AdminClient({"bootstrap.servers": bootstrap}).delete_topics([topic])
    Path(args.out).write_text(json.dumps({"events": total, "partitions": args.partitions, "runs": results}, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
