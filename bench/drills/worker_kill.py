"""Drill 3: `fti features worker` is killed (`kill -9`) three times during a stream.

A `kill -9` ends the supervisor too (its worker process dies with it), so nothing in the
process restarts it: the drill plays the process manager (systemd `Restart=on-failure`,
Kubernetes, compose `restart: on-failure`) and starts it again after each kill. Those are
counted as `process_manager_restarts`; a restart the drill needs beyond them would be manual.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.drills.broker_kill import judge_stream
from bench.drills.harness import DrillResult, gone, pid_of_child, wait_for
from bench.drills.pipeline import WORKER, Pipeline, Stream, sim_messages
from bench.drills.stack import DrillError, PrivateStack

__all__ = ["run"]


def run(stack: PrivateStack, workdir: Path, kills: int = 3, events: int = 12_000) -> DrillResult:
    result = DrillResult("worker-kill", f"worker kill -9 {kills} times during a stream")
    pipe = Pipeline(stack, "worker", workdir)
    orphans = 0
    try:
        pipe.start_worker()
        with Stream(pipe, sim_messages(events, seed=31), rate=300):
            for _ in range(kills):
                # Kill once the worker has made progress, mid-flush more often than not.
                wait_for("the worker to consume", lambda: _progressed(pipe), 120, pipe.procs)
                children = pid_of_child(pipe.procs.procs[WORKER].pid)
                pipe.procs.kill9(WORKER)
                orphans += _orphans(children)
                pipe.start_worker()
        t0 = time.monotonic()
        pipe.wait_caught_up()
        result.figures.update(
            kills=kills,
            caught_up_s_after_stream_end=round(time.monotonic() - t0, 1),
            process_manager_restarts=pipe.worker_starts - 1,
            supervisor_restarts=pipe.supervisor_restarts(),
            manual_restarts=pipe.worker_starts - 1 - kills,
            orphaned_worker_processes=orphans,
            **pipe.stream_figures(),
        )
        judge_stream(result)
        result.bar(orphans == 0, f"{orphans} worker processes outlived their supervisor")
    finally:
        codes = pipe.procs.stop_all()
    result.bar(codes.get(WORKER) == 0, f"the worker did not stop cleanly on SIGTERM: {codes}")
    return result


def _orphans(children: list[int]) -> int:
    """Worker processes still alive 30 s after their supervisor was killed (they should die with it)."""
    try:
        wait_for("the worker process to die with its supervisor", lambda: all(map(gone, children)), 30)
    except DrillError:
        return sum(1 for p in children if not gone(p))
    return 0


def _progressed(pipe: Pipeline) -> bool:
    """The worker is mid-stream: it has committed some of what was sent, and more is waiting."""
    time.sleep(1.0)  # a kill every few seconds at least, so the three land at different points
    lag = pipe.lag()
    return lag is not None and 0 < lag < pipe.sent and pipe.sent > 500
