"""`bench/feature_pipeline/redis_writes.py` replays what the processor asks of Redis on live
traffic: its recording must hold every claim, tile write and state save of the run, or the
figures it prints would be Redis's cost of part of the work."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[3]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_redis_writes", ROOT / "bench/feature_pipeline/redis_writes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_recording_holds_every_claim_tile_write_and_state_save_of_the_run() -> None:
    bench = _bench()
    got = bench.record(600, 2500.0)
    claimed = [eid for claims, _ in got.claims for _, eid, _ in claims]
    floor_ids = [eid for changes in got.floor for _, fields, _ in changes for eid in fields]
    assert len(claimed) == len(set(claimed)) == 600 and sorted(claimed) == sorted(floor_ids)
    # The baseline aggregates the same events (all fresh, none late): each id in its card's tail.
    tailed = [eid for changes in got.baseline for key, fields, _ in changes if ":tail:" in key for eid in fields]
    assert sorted(tailed) == sorted(claimed)
    # Every event reaches both demo views: the card view from the raw batch, the merchant view
    # re-keyed; each entity of a batch gets one tile write of its own.
    views = {w.key.view for writes in got.tiles for w in writes}
    assert views == {"card_activity", "merchant_activity"}
    for writes in got.tiles:
        assert len({w.key for w in writes}) == len(writes)
    saved_seen = [eid for keys, _ in got.saves for st in keys.values() for eid in st.added]
    assert sorted(saved_seen) == sorted(claimed)  # each event's dedup record saved once
    saved_recs = [eid for _, changes in got.saves for recs in changes.added.values() for eid in recs]
    assert sorted(saved_recs) == sorted(claimed * 2)  # and its record in each view's entity


def test_the_summary_sums_the_worker_kinds_and_divides_by_each_reference() -> None:
    bench = _bench()
    runs = {
        "claims": [(8.0, 100.0), (6.0, 100.0)],
        "tile writes": [(50.0, 1300.0), (46.0, 1300.0)],
        "state saves": [(14.0, 300.0), (16.0, 300.0)],
        "floor": [(4.0, 98.0), (6.0, 98.0)],
        "baseline": [(20.0, 500.0), (12.0, 500.0)],
    }
    got = bench.summarize(runs)
    assert got["tile writes"]["cpu_us_per_event"] == {"median": 48.0, "min": 46.0, "max": 50.0}
    assert got["tile writes"]["cpu_x_floor"] == 9.6 and got["tile writes"]["cpu_x_baseline"] == 3.0
    assert got["worker, all kinds"]["cpu_us_per_event"] == {"median": 70.0, "min": 68.0, "max": 72.0}
    assert got["worker, all kinds"]["cpu_x_floor"] == 14.0 and "aof_bytes_per_event" not in got["worker, all kinds"]
