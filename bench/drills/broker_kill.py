"""Drill 1: the broker is killed (`kill -9`) for 60 s mid-stream; the worker rides it out by itself."""

from __future__ import annotations

import time
from pathlib import Path

from bench.drills.harness import DrillResult, wait_for
from bench.drills.pipeline import Pipeline, Stream, sim_messages
from bench.drills.stack import PrivateStack

__all__ = ["run"]


def run(stack: PrivateStack, workdir: Path, outage_s: float = 60.0, events: int = 12_000) -> DrillResult:
    result = DrillResult("broker-kill", f"Kafka kill -9 for {outage_s:.0f} s mid-stream")
    pipe = Pipeline(stack, "broker", workdir)
    try:
        pipe.start_worker()
        pipe.produce(sim_messages(events // 3, seed=11))
        pipe.wait_caught_up()
        # The rest arrives at a steady rate while the broker dies: its client buffers what the
        # broker cannot take, and delivers it once the broker is back.
        with Stream(pipe, sim_messages(events - events // 3, seed=12), rate=150):
            time.sleep(2)
            stack.kill("kafka")
            killed = time.monotonic()
            wait_for(
                f"{outage_s:.0f} s of outage", lambda: time.monotonic() - killed >= outage_s, outage_s + 5, pipe.procs
            )
            restart_s = stack.up()
            back = time.monotonic()
        recovery = pipe.wait_caught_up(timeout_s=300)
        result.figures.update(
            outage_s=round(back - killed, 1),
            broker_restart_s=round(restart_s, 1),
            recovery_s_after_broker_back=round(time.monotonic() - back, 1),
            caught_up_s_after_stream_end=round(recovery, 1),
            supervisor_restarts=pipe.supervisor_restarts(),
            manual_restarts=pipe.worker_starts - 1,
            worker_log_lines=pipe.worker_log_lines(),
            **pipe.stream_figures(),
        )
        judge_stream(result)
    finally:
        codes = pipe.procs.stop_all()
    result.figures["worker_exit_on_sigterm"] = codes.get("worker")
    result.bar(codes.get("worker") == 0, f"the worker did not stop cleanly on SIGTERM: {codes}")
    return result


def judge_stream(result: DrillResult, dead_expected: dict[str, int] | None = None) -> None:
    """The bar every streaming drill shares: nothing lost, exact, no manual restart."""
    f = result.figures
    result.bar(f["events_lost"] == 0, f"{f['events_lost']} events lost")
    result.bar(f["undelivered_by_producer"] == 0, f"{f['undelivered_by_producer']} events never reached the broker")
    result.bar(f["mismatches"] == 0, f"{f['mismatches']} mismatches after fti features verify --sample 0")
    result.bar(f["manual_restarts"] == 0, f"{f['manual_restarts']} manual restarts")
    if dead_expected is not None:
        result.bar(f["dead_lettered_by_reason"] == dead_expected, "dead letters differ from what was sent")
    else:
        result.bar(not f["dead_lettered_by_reason"], f"valid events dead-lettered: {f['dead_lettered_by_reason']}")
