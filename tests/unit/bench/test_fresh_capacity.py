"""The feature bench's fresh capacity: a bisection to the highest rate within the p99 target."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

HERE = Path(__file__).parents[3] / "bench/feature_pipeline"


def _run_module() -> ModuleType:
    sys.path.insert(0, str(HERE))  # run.py imports its sibling modules by name, as when run as a script
    try:
        return importlib.import_module("run")
    finally:
        sys.path.remove(str(HERE))


def _phase(p99_ms: float, watched: int = 100, visible: int = 100) -> dict[str, Any]:
    return {"p50_ms": p99_ms / 2, "p99_ms": p99_ms, "watched": watched, "visible_within_10s": visible}


def test_it_bisects_to_the_highest_rate_whose_p99_is_within_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_module()
    rates: list[float] = []

    def freshness(bench: Any, proc: Any, prefix: str, rate: float, seconds: float, what: str) -> dict[str, Any]:
        rates.append(rate)
        assert what == "worker"
        return _phase(rate / 40)  # within 100 ms up to 4,000 events/s

    monkeypatch.setattr(run, "freshness", freshness)
    got = run.fresh_capacity(SimpleNamespace(kept=object(), kept_prefix="p"), 16_000, 1.0, 4)
    assert rates == [4_000, 6_000, 5_000, 4_500]  # 1/4 of the max passes (100 ms is within), the rest not
    assert (got["fraction_of_max"], got["rate_per_s"], got["lowest_failed_fraction"]) == (0.25, 4_000, 0.28125)
    assert [s["passed"] for s in got["steps"]] == [True, False, False, False]


def test_a_probe_not_seen_within_10_s_fails_the_step_whatever_the_p99(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_module()
    monkeypatch.setattr(run, "freshness", lambda *a: _phase(5.0, watched=100, visible=99))
    got = run.fresh_capacity(SimpleNamespace(kept=object(), kept_prefix="p"), 16_000, 1.0, 3)
    assert got["fraction_of_max"] == 0.0 and got["rate_per_s"] == 0.0  # never within: below 1/16 of the max
    assert got["lowest_failed_fraction"] == 0.0625


def test_the_baseline_is_bisected_the_same_way_and_the_worker_set_against_it(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_module()
    probed: list[str] = []

    def freshness(bench: Any, proc: Any, prefix: str, rate: float, seconds: float, what: str) -> dict[str, Any]:
        probed.append(what)
        return _phase(rate / 50)  # within 100 ms up to 5,000 events/s

    monkeypatch.setattr(run, "freshness", freshness)
    base = run.fresh_capacity(SimpleNamespace(kept=object(), kept_prefix="p"), 40_000, 1.0, 4, "baseline")
    assert probed == ["baseline"] * 4 and base["probed"] == "baseline" and base["max_rate_per_s"] == 40_000
    assert base["rate_per_s"] == 5_000  # 1/8 of its max
    worker = {"rate_per_s": 2_500.0}
    assert run.capacity_ratio(worker, base) == 0.5
    assert run.capacity_ratio(worker, {**base, "rate_per_s": 0.0}) == 0.0  # nothing to set it against
