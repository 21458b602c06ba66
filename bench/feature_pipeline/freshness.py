"""Freshness phases alone, on one all-views worker: for working on live latency (not a test).

    python bench/feature_pipeline/freshness.py --rates 2500,5000,2500,5000
    python bench/feature_pipeline/freshness.py --rates 3200 --env FTI_NATIVE=0   # the same, interpreted

`run.py` measures freshness once, at half the worker's catch-up rate, after 13 minutes of
other phases. This runs just that part: a small backlog of demo transactions, the all-views
worker caught up on it (its catch-up rate is printed, but on a backlog this small it is only
a rough figure), then one `run.freshness` phase per rate, in the order given, on that same
worker. Each phase prints its p50/p99 and where the CPU went (the worker's process tree,
Redis, this bench, the whole machine), and records what Redis spent its time on
(`run.command_split`). `--env NAME=VALUE` (repeatable) goes to the worker, to compare a
setting: run the script once per variant, interleaved, as the machine drifts within minutes.
Needs the stack (`fti stack up`); its topics, group and Redis keys are its own and are
deleted at the end. Stops with one line and status 2 if the worker dies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # the bench's sibling modules, also when loaded by path

from procs import stop
from run import Bench, _aof_rewrites, freshness, phase_line, produce_backlog, worker_round

from fti_core import native


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env takes NAME=VALUE, not {pair!r}")
        out[name] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", required=True, help="Events/s of each phase, in order: 2500,5000,2500")
    ap.add_argument("--seconds", type=float, default=15.0, help="Probing time of each phase.")
    ap.add_argument("--backlog", type=int, default=20_000, help="Demo transactions the worker catches up on first.")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="For the worker (repeatable).")
    ap.add_argument("--worker-timeout", type=float, default=600.0, help="Longest the catch-up may take.")
    ap.add_argument("--out", default=None, help="Write the phases as JSON here.")
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    env = _env(args.env)
    args.max_cached = 0  # what `Bench` reads of the memory phase's options
    bench = Bench(args)
    try:
        print(f"producing {args.backlog:,} demo transactions to {bench.topic}", flush=True)
        total = produce_backlog(bench.bootstrap, bench.topic, args.backlog, args.partitions)
        caught, proc = worker_round(bench, bench.defs_all, "fresh", total, keep=True, extra_env=env)
        assert proc is not None
        bench.kept = proc
        print(f"all-views worker ({native.status()}{', ' + ' '.join(args.env) if args.env else ''}) caught up on "
              f"{total:,} messages: {caught['events_per_s']:,.0f} events/s, {caught['cpu_us_per_event']:.0f} us "
              f"CPU per event", flush=True)  # fmt: skip
        phases = []
        for i, rate in enumerate(rates):
            before = _aof_rewrites(bench.r)
            got = freshness(bench, proc, caught["redis_prefix"], rate, args.seconds)
            got["redis_aof_rewrites"] = _aof_rewrites(bench.r)[0] - before[0] + before[1]
            phases.append(got)
            print(f"  phase {i + 1}/{len(rates)} at {rate:,.0f}/s: {phase_line(got)}", flush=True)
        if args.out:
            result: dict[str, Any] = {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "hot_path": native.status(),
                "worker_env": env,
                "catch_up": caught,
                "phases": phases,
            }
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
            print(f"wrote {args.out}")
    finally:
        if bench.kept is not None:
            stop(bench.kept)
        bench.cleanup()


if __name__ == "__main__":
    main()
