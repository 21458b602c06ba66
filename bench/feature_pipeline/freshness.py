"""Freshness phases alone, on one all-views worker: for working on live latency (not a test).

    python bench/feature_pipeline/freshness.py --rates 2500,5000,2500,5000
    python bench/feature_pipeline/freshness.py --rates 3200 --env FTI_NATIVE=0   # the same, interpreted

`run.py` measures freshness once, at half the worker's catch-up rate, after 13 minutes of
other phases. This runs just that part: a small backlog of demo transactions, the all-views
worker caught up on it (its catch-up rate is printed, but on a backlog this small it is only
a rough figure), then one `run.freshness` phase per rate, in the order given, on that same
worker. Each phase prints its p50/p99 and where the CPU went (the worker's process tree,
Redis, this bench, the whole machine); `--out` also keeps what Redis spent its time on
(`run.command_split`). `--env NAME=VALUE` (repeatable) goes to the worker, to compare a
setting: run the script once per variant, interleaved, as the machine drifts within minutes.
`--baseline` runs the phases on the hand-written baseline instead (`baseline.py --live`: the
card view, in memory, no durability), to see what freshness the same machine allows a loop
that does the least; `--floor` the floor instead (`baseline.py --floor`: each event decoded
and its id written, no view at all), to see what the consumer, the broker and Redis allow on
their own. Needs the stack (`fti stack up`); its topics and Redis keys are its own
and are deleted at the end. Stops with one line and status 2 if the process dies.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # the bench's sibling modules, also when loaded by path

from run import (
    Bench,
    freshness_with_rewrites,
    phase_line,
    produce_backlog,
    start_live_baseline,
    worker_round,
    write_result,
)

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
    probed = ap.add_mutually_exclusive_group()
    probed.add_argument("--baseline", action="store_true", help="Probe the hand-written baseline, not the worker.")
    probed.add_argument("--floor", action="store_true", help="Probe the floor: decode and write each id, no view.")
    ap.add_argument("--baseline-poll-ms", type=float, default=5.0, help="With --baseline or --floor: a poll's wait.")
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    if any(r * args.seconds < 1 for r in rates):
        raise SystemExit("freshness: every rate times --seconds must make at least one probe")
    env = _env(args.env)
    bench = Bench(args)
    try:
        print(f"producing {args.backlog:,} demo transactions to {bench.topic}", flush=True)
        total = produce_backlog(bench.bootstrap, bench.topic, args.backlog, args.partitions)
        caught: dict[str, Any] = {}
        what = "floor" if args.floor else "baseline" if args.baseline else "worker"
        if what != "worker":
            proc, prefix = start_live_baseline(bench, args.baseline_poll_ms, floor=args.floor)
            bench.kept = proc
            print("the floor started (live: decode, write each id)" if args.floor else
                  "hand-written baseline started (live, card view)", flush=True)  # fmt: skip
        else:
            caught, kept = worker_round(bench, bench.defs_all, "fresh", total, keep=True, extra_env=env)
            assert kept is not None
            proc = bench.kept = kept
            prefix = caught["redis_prefix"]
            print(f"all-views worker ({native.status()}{', ' + ' '.join(args.env) if args.env else ''}) caught up "
                  f"on {total:,} messages: {caught['events_per_s']:,.0f} events/s, {caught['cpu_us_per_event']:.0f} "
                  f"us CPU per event", flush=True)  # fmt: skip
        phases = []
        for i, rate in enumerate(rates):
            phases.append(freshness_with_rewrites(bench, proc, prefix, rate, args.seconds, what))
            print(f"  phase {i + 1}/{len(rates)} at {rate:,.0f}/s: {phase_line(phases[-1])}", flush=True)
        if args.out:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            setup = {"worker_env": env} if what == "worker" else {"poll_ms": args.baseline_poll_ms}
            write_result(args.out, {"when": when, "probed": what, "hot_path": native.status(), **setup,
                                    "catch_up": caught, "phases": phases})  # fmt: skip
    finally:
        bench.close()


if __name__ == "__main__":
    main()
