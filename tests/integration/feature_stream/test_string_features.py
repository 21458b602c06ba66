"""String features through the real worker: Redis evaluated at read time equals the archive's recomputation,
and `fti train` on a snapshot of what the worker archived feeds them to LightGBM as categoricals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from featurestore.definitions import load_definitions
from featurestore.online import OnlineKey, RedisOnlineStore
from featurestore.snapshots import SnapshotStore
from fti_demo.simulate import SimConfig, generate
from registry.models import ModelRegistry
from trainer.pipeline import run_training
from trainer.settings import TrainerSettings

from .conftest import DEFS_PATH, FeaturePipeline

# A view of the demo's transactions keyed by card, with both string kinds over merchant_id
# (declared `type: string` in the demo's events) beside a numeric feature.
STRING_VIEW = {
    "name": "card_merchants",
    "version": 1,
    "source": "transaction",
    "entity": "card_id",
    "allowed_lateness": "2m",
    "ttl": "1d",
    "features": [
        {"name": "n_1h", "agg": "count", "window": {"kind": "hopping", "size": "1h", "step": "5m"}},
        {"name": "last_merchant", "agg": "last_string", "field": "merchant_id", "window": {"size": "1d"}},
        {
            "name": "top_merchant_1h",
            "agg": "most_frequent",
            "field": "merchant_id",
            "window": {"kind": "hopping", "size": "1h", "step": "5m"},
        },
    ],
}


def _definitions(tmp_path: Path) -> Path:
    doc = yaml.safe_load(DEFS_PATH.read_text())
    doc["views"] = [STRING_VIEW]
    doc["models"] = [
        {
            "name": "merchants",
            "label": "is_fraud",
            "views": ["card_merchants:1"],
            "params": {"num_leaves": 7, "min_data_per_group": 5, "min_data_in_leaf": 5},
            "num_boost_round": 50,
            "max_categories": 8,
        }
    ]
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_worker_serves_string_features_equal_to_the_backfill(
    feature_pipeline: Callable[..., FeaturePipeline], tmp_path: Path
) -> None:
    pipe = feature_pipeline(partitions=2, definitions=_definitions(tmp_path))
    sim = list(generate(3_000, SimConfig(seed=23)))
    pipe.produce((e.key, e.value) for e in sim)
    pipe.start_worker()
    pipe.wait_caught_up(timeout=180)
    (skew,) = pipe.parity()
    assert skew.view == "card_merchants:1" and skew.entities > 50 and skew.probes > 5 * skew.entities
    assert skew.mismatches == [], skew.mismatches[:10]
    # What a server reads: the strings themselves, evaluated at the entity's newest event.
    view = load_definitions(pipe.settings.definitions_path).views[0]
    online = RedisOnlineStore.from_url(pipe.settings.redis_url.get_secret_value(), pipe.settings.redis_prefix)
    cards = online.entities(view.name, view.version)[:20]
    states = online.read_state([OnlineKey(view.name, view.version, c) for c in cards])
    merchants = {f"m{i:04d}" for i in range(SimConfig().merchants)}  # the simulator's merchant ids
    for card, state in zip(cards, states, strict=True):
        assert state is not None and state.newest_ms >= 0, card
        values = state.at(state.newest_ms)
        assert values["last_merchant"] in merchants and values["top_merchant_1h"] in merchants, (card, values)
        assert isinstance(values["n_1h"], float) and values["n_1h"] >= 1.0
    _train_on_what_the_worker_archived(pipe, tmp_path, merchants)


def _train_on_what_the_worker_archived(pipe: FeaturePipeline, tmp_path: Path, merchants: set[str]) -> None:
    defs = load_definitions(pipe.settings.definitions_path)
    snapshot = SnapshotStore(pipe.settings.offline_root).create(views=defs.views)
    settings = TrainerSettings(
        data_dir=tmp_path / "train", offline_store_uri=pipe.settings.offline_root, code_version="itest"
    )
    out = run_training(settings, "merchants", snapshot=snapshot, definitions=defs, seed=1)
    vocabularies = ModelRegistry.from_uri(settings.registry_root).get("merchants", out.record.version).vocabularies
    assert [v.column for v in vocabularies] == ["card_merchants__last_merchant", "card_merchants__top_merchant_1h"]
    assert all(len(v.values) == 8 and v.has_other and set(v.values) <= merchants for v in vocabularies)
    # LightGBM knows them as categoricals: their feature_infos list categories, not a [min:max] range.
    infos = next(line for line in out.result.model_text.splitlines() if line.startswith("feature_infos="))
    count_info, *string_infos = infos.removeprefix("feature_infos=").split(" ")
    assert count_info.startswith("[") and not any(i.startswith("[") for i in string_infos), infos
