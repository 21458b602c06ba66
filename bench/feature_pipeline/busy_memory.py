"""Worker memory with busy entities: RSS bounded by FTI_WORKER_MAX_CACHED_EVENTS, or growing.

    python bench/feature_pipeline/busy_memory.py [--rate 2500] [--events 40000] [--phases 6] [--bound 150000]

A cached view entity retains its accepted events within its view's longest window, and a
cached message key the event ids it remembers: the entity bound (FTI_WORKER_MAX_CACHED_ENTITIES)
does not bound those. Two workers (all demo views) read the same topic side by side: one with
`--bound` events, one with no event bound (10^12). Each phase feeds `--events` transactions at
`--rate` for 1,000 cards and 300 merchants of its own (the active entities shift, as a day's
traffic does), waits until both workers show the phase's last event online and have flushed,
and reads each worker's resident memory. The bounded worker should level off; the other
grows by what the retained events cost (about --events x 2 views).

Prints a line per phase and JSON (`--out`). Stops with an error when a worker dies.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from procs import BenchAbort, check_alive, stop, tree_rss
from run import Bench, _probe, produce_backlog, worker_round

CARDS, MERCHANTS = 1_000, 300
UNBOUNDED = 10**12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2500.0, help="transactions a second in each phase")
    ap.add_argument("--events", type=int, default=40_000, help="transactions a phase")
    ap.add_argument("--phases", type=int, default=6)
    ap.add_argument("--bound", type=int, default=150_000, help="FTI_WORKER_MAX_CACHED_EVENTS of the bounded worker")
    ap.add_argument("--worker-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("busy_memory.json")))
    a = ap.parse_args()
    # What `Bench` reads of the main bench's arguments.
    bench = Bench(argparse.Namespace(partitions=4, max_cached=0, worker_timeout=a.worker_timeout))
    workers: dict[str, Any] = {}
    try:
        total = produce_backlog(bench.bootstrap, bench.topic, 2_000, 4)
        for name, bound in (("bounded", a.bound), ("unbounded", UNBOUNDED)):
            env = {"FTI_WORKER_MAX_CACHED_EVENTS": str(bound)}
            res, proc = worker_round(bench, bench.defs_all, name, total, keep=True, extra_env=env)
            assert proc is not None
            workers[name] = (proc, res["redis_prefix"])
            print(f"worker {name} (FTI_WORKER_MAX_CACHED_EVENTS={bound}) caught up with the warm-up", flush=True)
        rows = _phases(bench, workers, a)
    finally:
        for proc, _ in workers.values():
            stop(proc)
        bench.cleanup()
    out = _summary(rows, a)
    print(json.dumps(out, indent=2))
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


def _phases(bench: Bench, workers: dict[str, Any], a: argparse.Namespace) -> list[dict[str, Any]]:
    r = redis.Redis.from_url(bench.redis_url)
    producer = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 5})
    rng = random.Random(5)
    rows = []
    for phase in range(a.phases):
        start, now_ms = time.monotonic(), int(time.time() * 1000)
        card, eid = "", ""
        for i in range(a.events):
            card, merchant = f"b{phase}c{rng.randrange(CARDS):04d}", f"b{phase}m{rng.randrange(MERCHANTS):03d}"
            eid, value = _probe(card, merchant, 10.0 + i % 7, now_ms + int(i * 1000 / a.rate))
            producer.produce(bench.topic, key=card.encode(), value=value)
            producer.poll(0)
            ahead = (i + 1) / a.rate - (time.monotonic() - start)
            if ahead > 0.01:
                time.sleep(ahead)
            if i % 5_000 == 0:
                for name, (proc, _) in workers.items():
                    check_alive(proc, f"worker {name}")
        producer.flush(30)
        row: dict[str, Any] = {"phase": phase + 1, "events_so_far": (phase + 1) * a.events}
        for name, (proc, prefix) in workers.items():
            deadline = time.monotonic() + a.worker_timeout
            while not r.hexists(f"{prefix}:tail:card_activity:v1:{card}", eid):
                check_alive(proc, f"worker {name}")
                if time.monotonic() > deadline:
                    what = f"worker {name} did not show phase {phase + 1}'s last event"
                    raise BenchAbort(f"{what} in {a.worker_timeout:.0f} s")
                time.sleep(0.1)
            row[f"{name}_caught_up_s"] = round(time.monotonic() - start - a.events / a.rate, 1)
        time.sleep(1.5)  # past the next flush (0.5 s), whose trim evicts
        for name, (proc, _) in workers.items():
            check_alive(proc, f"worker {name}")
            row[f"{name}_rss_mb"] = round(tree_rss(proc.pid) / 2**20, 1)  # its supervisor and the worker
        print(
            f"phase {phase + 1}/{a.phases}: {row['events_so_far']:,} events;"
            f" bounded {row['bounded_rss_mb']:.0f} MB, unbounded {row['unbounded_rss_mb']:.0f} MB",
            flush=True,
        )
        rows.append(row)
    return rows


def _summary(rows: list[dict[str, Any]], a: argparse.Namespace) -> dict[str, Any]:
    """RSS growth per transaction fed over the second half of the phases (the bound is
    reached by then), and over all of them after the first."""

    def growth(name: str, since: dict[str, Any]) -> int:
        last = rows[-1]
        span = max(last["events_so_far"] - since["events_so_far"], 1)
        return round((last[f"{name}_rss_mb"] - since[f"{name}_rss_mb"]) * 2**20 / span)

    half = rows[(len(rows) - 1) // 2]
    return {
        "rate_per_s": a.rate,
        "events_per_phase": a.events,
        "bound_events": a.bound,
        "phases": rows,
        "bounded_bytes_per_event_second_half": growth("bounded", half),
        "unbounded_bytes_per_event_second_half": growth("unbounded", half),
        "bounded_bytes_per_event_after_first": growth("bounded", rows[0]),
        "unbounded_bytes_per_event_after_first": growth("unbounded", rows[0]),
    }


if __name__ == "__main__":
    main()
