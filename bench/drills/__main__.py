"""`python -m bench.drills [--ci] [--only NAME]...` (`make drills`, `make drills-ci`)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.drills import broker_kill, fuzz_events, fuzz_grpc, offline_unwritable, redis_kill, worker_kill
from bench.drills.env import shared_kafka
from bench.drills.harness import DrillResult
from bench.drills.stack import DrillError, PrivateStack

Drill = Callable[[PrivateStack, Path], DrillResult]
DRILLS: dict[str, Drill] = {
    "fuzz-events": fuzz_events.run,
    "fuzz-grpc": fuzz_grpc.run,
    "worker-kill": worker_kill.run,
    "offline-unwritable": offline_unwritable.run,
    "redis-kill": redis_kill.run,
    "broker-kill": broker_kill.run,
}
# CI (`make drills-ci`, from `scripts/test`): the shared broker, which these never kill, and a
# private Redis for the blip; smaller, so they add about a minute.
CI_REDIS_EVENTS = 4_000
CI_DRILLS: dict[str, Drill] = {
    "fuzz-events": lambda stack, workdir: fuzz_events.run(stack, workdir, count=2_000, events=3_000),
    "redis-kill": lambda stack, workdir: redis_kill.run(stack, workdir, outage_s=5, events=CI_REDIS_EVENTS),
}


def _run_one(name: str, drill: Drill, stack: PrivateStack, workdir: Path) -> DrillResult:
    t0 = time.monotonic()
    try:
        result = drill(stack, workdir / name)
    except DrillError as exc:
        result = DrillResult(name, "did not complete")
        result.failures.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in the drill itself: report it as a failure, go on
        result = DrillResult(name, "crashed")
        result.failures.append("".join(traceback.format_exception(exc)))
    result.seconds = time.monotonic() - t0
    if dead := stack.dead():  # every drill gives back what it killed: anything else died on its own
        result.failures.append(f"{', '.join(dead)} of the drills' stack is not running after the drill")
        stack.up()
    print(result.render(), flush=True)
    return result


def _with_outage(drills: dict[str, Drill], outage_s: float | None) -> dict[str, Drill]:
    """The drills, those that kill a dependency keeping it down `outage_s` (None: their own)."""
    if outage_s is None:
        return drills
    if outage_s <= 0:
        raise SystemExit("--outage must be more than 0 seconds")
    out = dict(drills)
    if "redis-kill" in out and drills is CI_DRILLS:
        out["redis-kill"] = lambda stack, workdir: redis_kill.run(
            stack, workdir, outage_s=outage_s, events=CI_REDIS_EVENTS
        )
    elif "redis-kill" in out:
        out["redis-kill"] = lambda stack, workdir: redis_kill.run(stack, workdir, outage_s=outage_s)
    if "broker-kill" in out:
        out["broker-kill"] = lambda stack, workdir: broker_kill.run(stack, workdir, outage_s=outage_s)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drills")
    parser.add_argument("--only", action="append", choices=sorted(DRILLS), help="Run only these drills.")
    parser.add_argument(
        "--ci",
        action="store_true",
        help="The CI set (fuzz + a Redis blip) on the shared broker (FTI_KAFKA_BOOTSTRAP_SERVERS) and a private Redis.",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (logs, data) afterwards.")
    parser.add_argument(
        "--outage",
        type=float,
        default=None,
        metavar="S",
        help="How long the kill drills keep Redis or the broker down (default: each drill's own, 15 s and 60 s).",
    )
    args = parser.parse_args(argv)
    drills = _with_outage(CI_DRILLS if args.ci else DRILLS, args.outage)
    names = args.only or list(drills)
    workdir = Path(tempfile.mkdtemp(prefix="fti-drills-"))
    print(f"drills: {', '.join(names)}; logs and data under {workdir}", flush=True)
    stack = PrivateStack(workdir, shared_kafka=shared_kafka() if args.ci else None)
    t0 = time.monotonic()
    results: list[DrillResult] = []
    try:
        print(f"private stack: Kafka {stack.addr.kafka}, Redis {stack.addr.redis_url} (started in {stack.up():.0f} s)")
        for name in names:
            results.append(_run_one(name, drills[name], stack, workdir))
    finally:
        stack.down()
    failed = [r.name for r in results if not r.ok]
    summary = {"drills": [r.summary() for r in results], "failed": failed, "seconds": round(time.monotonic() - t0)}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nall drills: {len(results) - len(failed)} passed, {len(failed)} failed {failed} in {summary['seconds']} s")
    print(f"summary: {workdir / 'summary.json'}")
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
