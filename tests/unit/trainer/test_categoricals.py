"""String features reach LightGBM as categoricals, with a vocabulary stored in the model version."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from featurestore.definitions import Definitions, parse_definitions
from registry.models import ModelRegistry, Vocabulary
from registry.promotion import HOLDOUT_LABEL_COLUMN, Promoter, PromotionPolicy
from trainer.dataset import build_training_set
from trainer.pipeline import run_training
from trainer.settings import TrainerSettings

from .labels_helper import outcome_labels

T0 = 1_700_000_000_000
KINDS = ["grocery", "fuel", "travel", "casino"]  # the risky one is not the most common
RARE = [f"rare{i}" for i in range(12)]

DEFS = {
    "views": [
        {
            "name": "card",
            "version": 1,
            "source": "txn",
            "entity": "card_id",
            "ttl": "1h",
            "features": [
                {"name": "n_1h", "agg": "count", "window": {"size": "1h"}},
                {"name": "last_mcc", "agg": "last_string", "field": "mcc", "window": {"size": "1h"}},
                {"name": "top_mcc", "agg": "most_frequent", "field": "mcc", "window": {"size": "1h"}},
            ],
        }
    ],
    "labels": [{"name": "bad", "event_type": "outcome", "entity": "card_id", "field": "bad"}],
    "models": [
        {
            "name": "risk",
            "label": "bad",
            "views": ["card:1"],
            # Small groups are allowed to split: the test data is small.
            "params": {"num_leaves": 7, "learning_rate": 0.1, "min_data_per_group": 5, "cat_smooth": 1},
            "num_boost_round": 100,
            "early_stopping_rounds": 10,
            "max_categories": 6,
        }
    ],
}


@dataclass
class Snapshot:
    id: str
    txns: pd.DataFrame
    labels: pd.DataFrame

    def archive(self, event_type: str) -> pd.DataFrame:
        r = self.txns if event_type == "txn" else self.txns.iloc[0:0]
        times = r["t"].to_numpy()
        return pd.DataFrame(
            {
                "event_id": [f"t{i}" for i in range(len(r))],
                "event_type": event_type,
                "event_time_ms": times,
                "entities_json": [json.dumps({"card_id": c}) for c in r["card"]],
                "values_json": [json.dumps({"mcc": m}) for m in r["mcc"]],
                "watermark_ms": -1,
                "ingest_ns": times * 1_000_000,
            }
        )

    def events(self, event_type: str) -> pd.DataFrame:
        return self.labels if event_type == "outcome" else self.labels.iloc[0:0]


def make_snapshot(n: int = 3000, seed: int = 0) -> Snapshot:
    rng = np.random.default_rng(seed)
    t = T0 + np.sort(rng.integers(0, 86_400_000, size=n))
    card = rng.choice([f"c{i}" for i in range(300)], size=n)
    mcc = np.where(rng.random(n) < 0.05, rng.choice(RARE, size=n), rng.choice(KINDS, size=n, p=[0.4, 0.3, 0.2, 0.1]))
    bad = ((mcc == "casino") & (rng.random(n) < 0.9)) | (rng.random(n) < 0.03)
    txns = pd.DataFrame({"t": t, "card": card, "mcc": mcc})
    labels = outcome_labels(t + 1, card, bad)
    return Snapshot(id=f"snap-{seed}", txns=txns, labels=labels)


@pytest.fixture
def defs() -> Definitions:
    return parse_definitions(DEFS)


@pytest.fixture
def settings(tmp_path: Path) -> TrainerSettings:
    return TrainerSettings(data_dir=tmp_path, num_threads=2, code_version="test")


def test_string_features_are_coded_by_a_vocabulary_of_the_training_rows(defs: Definitions) -> None:
    ts = build_training_set(make_snapshot(), defs, "risk")
    assert ts.columns == ["card__n_1h", "card__last_mcc", "card__top_mcc"] and ts.categorical == [1, 2]
    last = next(v for v in ts.vocabularies if v.column == "card__last_mcc")
    assert last.values[:4] == tuple(KINDS) and len(last.values) == 6 and last.has_other  # capped: rare ones share
    raw = ts.strings["card__last_mcc"]
    assert all(isinstance(v, str) for v in raw)  # each label follows a transaction of its card
    assert ts.x[:, 1].tolist() == last.codes(raw)
    assert set(np.unique(ts.x[:, 1])) <= {float(i) for i in range(7)}  # 6 categories and the other code


def test_the_model_splits_on_categories_and_the_vocabulary_round_trips_through_the_registry(
    settings: TrainerSettings, defs: Definitions
) -> None:
    out = run_training(settings, "risk", snapshot=make_snapshot(), definitions=defs, seed=1)
    booster = lgb.Booster(model_str=out.result.model_text)
    trees = booster.dump_model()["tree_info"]

    def decisions(node: dict[str, object]) -> list[tuple[object, object]]:
        if "split_feature" not in node:
            return []
        here = [(node["split_feature"], node["decision_type"])]
        return here + decisions(node["left_child"]) + decisions(node["right_child"])  # type: ignore[arg-type]

    splits = [d for tree in trees for d in decisions(tree["tree_structure"])]
    assert any(f in (1, 2) and kind == "==" for f, kind in splits)  # a categorical split on a string feature
    assert out.record.metrics["auc"] > 0.85
    again = ModelRegistry.from_uri(settings.registry_root).get("risk", out.record.version)
    assert again.vocabularies == out.record.vocabularies and len(again.vocabularies) == 2
    assert [v.column for v in again.vocabularies] == ["card__last_mcc", "card__top_mcc"]


def test_held_out_rows_keep_the_strings_so_each_version_codes_them_with_its_own_vocabulary(
    settings: TrainerSettings, defs: Definitions
) -> None:
    first = run_training(settings, "risk", snapshot=make_snapshot(seed=0), definitions=defs, seed=1).record
    second = run_training(settings, "risk", snapshot=make_snapshot(seed=5), definitions=defs, seed=1).record
    registry = ModelRegistry.from_uri(settings.registry_root)
    holdout = pd.read_parquet(io.BytesIO(registry.load_holdout("risk", second.version) or b""))
    assert {type(v) for v in holdout["card__top_mcc"]} <= {str, type(None)}
    assert holdout[HOLDOUT_LABEL_COLUMN].notna().all()
    registry.move_alias("risk", "production", first.version, actor="test")
    decision = Promoter(registry, PromotionPolicy(margin=0.5), actor="test").consider("risk", second.version)
    assert decision is not None and not decision.promoted  # scored both (by a margin no model beats)
    assert decision.evidence["holdout_rows"] == len(holdout)


def test_a_vocabulary_codes_what_training_saw_and_leaves_the_rest_missing() -> None:
    vocab = Vocabulary.build("v__f", ["a", "b", "a"], max_categories=5)
    assert vocab.codes(["a", "b", "c", None]) == pytest.approx([0.0, 1.0, np.nan, np.nan], nan_ok=True)


def test_as_served_joins_give_the_same_strings_when_every_event_was_ingested_on_time(defs: Definitions) -> None:
    snap = make_snapshot(n=600)
    served = build_training_set(snap, defs, "risk", as_served=True)
    as_of = build_training_set(snap, defs, "risk")
    assert served.vocabularies == as_of.vocabularies
    assert np.array_equal(served.x, as_of.x, equal_nan=True)
    assert list(served.strings["card__top_mcc"]) == list(as_of.strings["card__top_mcc"])
