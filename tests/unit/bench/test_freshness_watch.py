"""The feature bench's freshness phase: when the watcher looks for a probe, and what it reports."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

import redis

HERE = Path(__file__).parents[3] / "bench/feature_pipeline"


def _module(name: str) -> ModuleType:
    sys.path.insert(0, str(HERE))  # the bench imports its sibling modules by name, as when run as a script
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(HERE))


def _watcher(give_up_s: float = 10.0) -> object:
    run = _module("run")
    return run._Watcher(redis.Redis(), "p", give_up_s)  # the client connects on first use: none here


def test_a_probe_is_looked_for_every_5_ms_until_100_ms_old_then_every_twentieth_of_its_age() -> None:
    w = _watcher()
    w.pending[("c1", "young")] = [10.0, 10.0]  # type: ignore[attr-defined]
    w.pending[("c2", "old")] = [9.0, 10.0]  # type: ignore[attr-defined]
    w.seen([("c1", "young"), ("c2", "old")], [False, False], 10.05)  # type: ignore[attr-defined]
    assert w.pending[("c1", "young")][1] == 10.05 + 0.005  # type: ignore[attr-defined]  # 50 ms old
    assert abs(w.pending[("c2", "old")][1] - (10.05 + 1.05 / 20)) < 1e-9  # type: ignore[attr-defined]
    assert w.due(10.06) == [("c1", "young")]  # type: ignore[attr-defined]  # the old one waits 52.5 ms
    assert w.due(10.2) == [("c1", "young"), ("c2", "old")]  # type: ignore[attr-defined]  # oldest first


def test_a_visible_probe_is_timed_from_its_produce_and_no_longer_looked_for() -> None:
    w = _watcher()
    w.pending[("c1", "a")] = [10.0, 10.0]  # type: ignore[attr-defined]
    w.pending[("c1", "b")] = [10.01, 10.01]  # type: ignore[attr-defined]
    w.seen([("c1", "a"), ("c1", "b")], [True, False], 10.08)  # type: ignore[attr-defined]
    assert [round(x, 6) for x in w.lat] == [80.0]  # type: ignore[attr-defined]
    assert list(w.pending) == [("c1", "b")]  # type: ignore[attr-defined]


def test_a_look_takes_at_most_its_limit_of_the_due_probes() -> None:
    w = _watcher()
    for i in range(150):
        w.pending[("c", str(i))] = [1.0 + i / 1000, 1.0 + i / 1000]  # type: ignore[attr-defined]
    got = w.due(2.0, limit=100)  # type: ignore[attr-defined]
    assert got == [("c", str(i)) for i in range(100)]


def test_the_redis_split_ranks_what_each_command_took_between_two_readings_per_event() -> None:
    run = _module("run")
    before = {"evalsha": (10, 5_000), "hset": (100, 900), "get": (5, 50)}
    after = {"evalsha": (30, 45_000), "hset": (400, 2_400), "get": (5, 50), "set": (200, 600)}
    got = run.command_split(before, after, events=200, top=3)
    assert got == {
        "evalsha": {"calls_per_event": 0.1, "us_per_event": 200.0},
        "hset": {"calls_per_event": 1.5, "us_per_event": 7.5},
        "set": {"calls_per_event": 1.0, "us_per_event": 3.0},  # new since the first reading
    }  # `get` had no calls in between
    assert list(run.command_split(before, after, events=200, top=1)) == ["evalsha"]


def test_stats_reset_between_the_readings_count_from_zero() -> None:
    run = _module("run")
    got = run.command_split({"hset": (1_000, 9_000)}, {"hset": (50, 400)}, events=100)
    assert got == {"hset": {"calls_per_event": 0.5, "us_per_event": 4.0}}


def test_the_watcher_stops_only_once_nothing_is_pending_or_after_a_last_look_at_the_give_up() -> None:
    w = _watcher(give_up_s=0.05)
    now = time.monotonic()
    w.pending[("c1", "late")] = [now - 5.0, now + 60.0]  # type: ignore[attr-defined]  # backed off past the give-up
    looked: list[list[tuple[str, str]]] = []

    def look(keys: list[tuple[str, str]]) -> list[bool]:
        looked.append(keys)
        return [True] * len(keys)

    w.look = look  # type: ignore[attr-defined]
    w.done.set()  # type: ignore[attr-defined]
    w.run()  # type: ignore[attr-defined]
    assert looked == [[("c1", "late")]]  # not due, yet looked for once before giving up
    assert w.pending == {} and len(w.lat) == 1  # type: ignore[attr-defined]


def test_busy_time_is_every_state_of_the_cpu_line_but_idle_and_io_wait() -> None:
    procs = _module("procs")
    tick = procs._TICK
    #      cpu user nice system idle iowait irq softirq steal guest guest_nice
    line = "cpu  100 2 30 5000 70 4 6 8 50 0"
    assert procs.busy_s(line) == (100 + 2 + 30 + 4 + 6 + 8) / tick  # guest is inside user


def test_the_machine_busy_time_grows_by_at_least_what_this_process_burns() -> None:
    procs = _module("procs")
    before, cpu0 = procs.machine_cpu_s(), time.process_time()
    while time.process_time() - cpu0 < 0.3:
        pass
    assert procs.machine_cpu_s() - before >= 0.25  # clock ticks of 10 ms: some slack below 0.3


def test_a_phase_line_names_the_probed_process_its_cpu_is_of() -> None:
    run = _module("run")
    g = {"p50_ms": 12.0, "p99_ms": 20.0, "watched": 10, "redis_aof_rewrites": 0, "worker_cpu_us_per_event": 94.0,
         "redis_cpu_us_per_event": 20.0, "redis_rewrite_cpu_us_per_event": 0.0, "bench_cpu_us_per_event": 60.0,
         "machine_cpu_share_of_a_core": 0.74, "cores": 2}  # fmt: skip
    assert "CPU per event: worker 94 us" in run.phase_line(g)  # a result from before the field
    assert "CPU per event: floor 94 us" in run.phase_line({**g, "probed": "floor"})
