"""Drill 2: Redis is killed (`kill -9`) for 15 s while the server is under load and events stream in.

The server answers UNAVAILABLE (FTI_SERVE_REDIS_FAILURE_MODE=unavailable, the default) or
scores with the features missing (`missing`) while Redis is gone, and recovers by itself; the
worker rides the outage out under its supervisor. Redis runs with append-only persistence, so
a kill loses nothing it acknowledged.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.drills.broker_kill import judge_stream
from bench.drills.harness import DrillResult, wait_for
from bench.drills.pipeline import Pipeline, Stream, sim_messages
from bench.drills.serving import Load, Sample, entities_of, percentile, serve_model
from bench.drills.stack import PrivateStack

__all__ = ["run"]

ALLOWED = {"unavailable": {"OK", "UNAVAILABLE"}, "missing": {"OK"}}


def run(
    stack: PrivateStack, workdir: Path, outage_s: float = 15.0, events: int = 6_000, mode: str = "unavailable"
) -> DrillResult:
    result = DrillResult("redis-kill", f"Redis kill -9 for {outage_s:.0f} s, server under load (mode {mode})")
    pipe = Pipeline(stack, "redis", workdir, redis_failure_mode=mode)
    try:
        pipe.start_worker()
        first = sim_messages(events, seed=21)
        pipe.produce(first)
        pipe.wait_caught_up()
        server = serve_model(pipe)
        load = Load(server.target, entities_of(first, 200), rate=100).start()
        wait_for("answers under load", lambda: len(load.samples) >= 100, 60, pipe.procs)
        with Stream(pipe, sim_messages(events // 2, seed=22), rate=150):
            stack.kill("redis")
            killed = time.monotonic()
            wait_for("the outage", lambda: time.monotonic() - killed >= outage_s, outage_s + 5, pipe.procs)
            stack.up()
            back = time.monotonic()
            server_back = wait_for("the server to answer OK", lambda: _ok_since(load.samples, back), 60, pipe.procs)
        wait_for("more answers", lambda: len([s for s in load.samples if s.sent > back + server_back]) >= 200, 60)
        load.stop()
        result.figures.update(_serving_figures(load.samples, killed, back, server_back, mode))
        pipe.wait_caught_up()
        result.figures.update(
            outage_s=round(back - killed, 1),
            supervisor_restarts=pipe.supervisor_restarts(),
            manual_restarts=pipe.worker_starts - 1,
            worker_caught_up_s_after_redis_back=round(time.monotonic() - back, 1),
            **pipe.stream_figures(),
        )
        judge_stream(result)
        _judge_serving(result, mode)
    finally:
        codes = pipe.procs.stop_all()
    result.figures["exit_on_sigterm"] = codes
    result.bar(all(c == 0 for c in codes.values()), f"a process did not stop cleanly on SIGTERM: {codes}")
    return result


def _ok_since(samples: list[Sample], t: float) -> bool:
    return any(s.code == "OK" and s.sent >= t for s in samples[-50:])


def _serving_figures(
    samples: list[Sample], killed: float, back: float, server_back: float, mode: str
) -> dict[str, object]:
    during = [s for s in samples if killed <= s.sent < back]
    after = [s for s in samples if s.sent >= back + server_back]
    codes: dict[str, int] = {}
    for s in samples:
        codes[s.code] = codes.get(s.code, 0) + 1
    return {
        "requests": len(samples),
        "status_codes": codes,
        "codes_during_outage": sorted({s.code for s in during}),
        "answers_with_missing_features_during_outage": sum(1 for s in during if s.code == "OK" and s.missing),
        "slowest_answer_during_outage_ms": round(max((s.latency_ms for s in during), default=0.0), 1),
        "server_recovery_s_after_redis_back": round(server_back, 2),
        "failed_after_recovery": sum(1 for s in after if s.code != "OK"),
        "p99_ok_ms_after_recovery": round(percentile([s.latency_ms for s in after if s.code == "OK"], 0.99), 2),
        "allowed_codes": sorted(ALLOWED[mode]),
    }


def _judge_serving(result: DrillResult, mode: str) -> None:
    f = result.figures
    bad = set(f["status_codes"]) - ALLOWED[mode]
    result.bar(not bad, f"statuses other than {sorted(ALLOWED[mode])}: {sorted(bad)}")
    result.bar(f["failed_after_recovery"] == 0, f"{f['failed_after_recovery']} failed requests after recovery")
    result.bar(f["slowest_answer_during_outage_ms"] < 2000, "requests hung during the outage (2 s deadline reached)")
