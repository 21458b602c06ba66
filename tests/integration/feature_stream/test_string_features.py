"""String features through the real worker: Redis evaluated at read time equals the archive's recomputation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from featurestore.definitions import load_definitions
from featurestore.online import OnlineKey, RedisOnlineStore
from fti_demo.simulate import SimConfig, generate

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
    doc["models"] = []
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
