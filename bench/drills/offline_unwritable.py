"""Drill 4: the offline store cannot be written for 20 s while events stream in.

The drills run as root, for whom `chmod a-w` stops nothing, so the store's directory is moved
aside and a plain file put in its place (every write under it fails, as on a read-only or
vanished mount), then put back, as `tests/integration/feature_stream/test_outages.py` does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.drills.broker_kill import judge_stream
from bench.drills.harness import DrillResult, wait_for
from bench.drills.pipeline import WORKER, Pipeline, Stream, sim_messages
from bench.drills.stack import PrivateStack

__all__ = ["run"]


def run(stack: PrivateStack, workdir: Path, outage_s: float = 20.0, events: int = 9_000) -> DrillResult:
    result = DrillResult("offline-unwritable", f"offline store unwritable for {outage_s:.0f} s")
    how = "directory swapped for a file and back" if os.geteuid() == 0 else "directory swapped for a file (not root)"
    result.notes.append(f"running as uid {os.geteuid()}: chmod stops no root writes, so the store's {how}")
    pipe = Pipeline(stack, "offline", workdir)
    root = Path(pipe.settings.offline_root)
    aside = root.with_name(root.name + ".aside")
    try:
        pipe.start_worker()
        pipe.produce(sim_messages(events // 3, seed=41))
        pipe.wait_caught_up()
        with Stream(pipe, sim_messages(events - events // 3, seed=42), rate=200):
            time.sleep(2)
            root.rename(aside)
            root.write_bytes(b"")
            broken = time.monotonic()
            wait_for("the outage", lambda: time.monotonic() - broken >= outage_s, outage_s + 5, pipe.procs)
            noticed = "offline store" in pipe.procs.log(WORKER)
            root.unlink()
            aside.rename(root)
            back = time.monotonic()
        pipe.wait_caught_up()
        result.figures.update(
            outage_s=round(back - broken, 1),
            worker_reported_the_outage=noticed,
            recovery_s_after_store_back=round(time.monotonic() - back, 1),
            supervisor_restarts=pipe.supervisor_restarts(),
            manual_restarts=pipe.worker_starts - 1,
            **pipe.stream_figures(),
        )
        judge_stream(result)
        result.bar(noticed, "the worker never said the offline store failed")
    finally:
        if aside.exists():  # a failure half-way: give the store back before anything else
            if root.is_file():
                root.unlink()
            aside.rename(root)
        codes = pipe.procs.stop_all()
    result.bar(codes.get(WORKER) == 0, f"the worker did not stop cleanly on SIGTERM: {codes}")
    return result
