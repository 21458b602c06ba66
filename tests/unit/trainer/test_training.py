"""Training on an in-memory snapshot: deterministic bytes, lineage, time split, clear failures."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from featurestore.definitions import Definitions, parse_definitions
from registry.models import ModelRegistry
from registry.models.metrics import evaluate
from registry.promotion import HOLDOUT_LABEL_COLUMN
from trainer.dataset import build_training_set, time_split
from trainer.errors import TrainingDataError
from trainer.pipeline import run_training
from trainer.settings import TrainerSettings

from .labels_helper import outcome_labels

T0 = 1_700_000_000_000

DEFS = {
    "views": [
        {
            "name": "card",
            "version": 3,
            "source": "txn",
            "entity": "card_id",
            "ttl": "1h",
            "features": [
                {"name": "risk", "agg": "last", "field": "r", "window": {"size": "1h"}},
                {"name": "noise", "agg": "sum", "field": "n", "window": {"size": "1h"}},
            ],
        }
    ],
    "labels": [{"name": "bad", "event_type": "outcome", "entity": "card_id", "field": "bad"}],
    "models": [
        {
            "name": "risk",
            "label": "bad",
            "views": ["card:3"],
            "params": {"num_leaves": 7, "learning_rate": 0.1},
            "num_boost_round": 200,
            "early_stopping_rounds": 10,
        }
    ],
}


@dataclass
class FakeSnapshot:
    id: str
    rows: pd.DataFrame
    labels: pd.DataFrame
    calls: list[str] = field(default_factory=list)

    def archive(self, event_type: str) -> pd.DataFrame:
        """The transactions as archive rows (the labels are read through `events`)."""
        self.calls.append(event_type)
        r = self.rows if event_type == "txn" else self.rows.iloc[0:0]
        times = r["event_time"].astype("int64").to_numpy()
        return pd.DataFrame(
            {
                "event_id": [f"t{i}" for i in range(len(r))],
                "event_type": event_type,
                "event_time_ms": times,
                "entities_json": [json.dumps({"card_id": c}) for c in r["entity_key"]],
                "values_json": [json.dumps({"r": a, "n": b}) for a, b in zip(r["risk"], r["noise"], strict=True)],
                "watermark_ms": -1,
                "ingest_ns": times * 1_000_000,
            }
        )

    def events(self, event_type: str) -> pd.DataFrame:
        return self.labels if event_type == "outcome" else self.labels.iloc[0:0]


def make_snapshot(n: int = 3000, seed: int = 0) -> FakeSnapshot:
    rng = np.random.default_rng(seed)
    cards = [f"c{i}" for i in range(300)]
    t = T0 + np.sort(rng.integers(0, 86_400_000, size=n))
    card = rng.choice(cards, size=n)
    risk, noise = rng.normal(size=n), rng.normal(size=n)
    rows = pd.DataFrame(
        {
            "entity_key": card,
            "event_time": pd.to_datetime(t, unit="ms", utc=True).as_unit("ms"),
            "risk": risk,
            "noise": noise,
        }
    ).sort_values(["entity_key", "event_time"])
    bad = (risk + 0.7 * rng.normal(size=n) > 1.0).astype(int)
    labels = outcome_labels(t + 1000, card, bad)
    return FakeSnapshot(id=f"snap-{seed}", rows=rows, labels=labels)


@pytest.fixture
def defs() -> Definitions:
    return parse_definitions(DEFS)


@pytest.fixture
def settings(tmp_path: Path) -> TrainerSettings:
    return TrainerSettings(data_dir=tmp_path, num_threads=2, code_version="test")


def test_train_publishes_with_lineage_and_learns(settings: TrainerSettings, defs: Definitions) -> None:
    messages: list[str] = []
    out = run_training(settings, "risk", snapshot=make_snapshot(), definitions=defs, seed=3, progress=messages.append)
    rec = out.record
    assert rec.version == 1 and rec.snapshot_id == "snap-0" and rec.code_version == "test"
    assert [f.column for f in rec.features] == ["card__risk", "card__noise"]
    assert {f.view_version for f in rec.features} == {3}
    assert rec.entities == ("card_id",) and rec.label is not None and rec.label.name == "bad"
    assert rec.metrics["auc"] > 0.85 and 0 < rec.metrics["logloss"] < 0.5
    assert rec.params["seed"] == "3" and rec.params["deterministic"] == "True"
    assert int(rec.params["valid_rows"]) == pytest.approx(600, abs=5)
    assert any(m.startswith("round ") for m in messages) and messages[-1].startswith("published risk v1")
    booster = lgb.Booster(model_str=out.result.model_text)
    assert booster.feature_name() == ["card__risk", "card__noise"]


def test_the_version_names_each_views_entity_and_its_flavor_and_its_metrics_are_the_artefacts(
    settings: TrainerSettings, defs: Definitions
) -> None:
    rec = run_training(settings, "risk", snapshot=make_snapshot(), definitions=defs, seed=3).record
    assert [(f.view, f.entity) for f in rec.features] == [("card", "card_id"), ("card", "card_id")]
    assert rec.flavor == "lightgbm"
    # The recorded metrics are those of the published bytes, scored through the flavor.
    registry = ModelRegistry.from_uri(settings.registry_root)
    holdout = pd.read_parquet(io.BytesIO(registry.load_holdout("risk", rec.version) or b""))
    scores = registry.load_predictor("risk", rec.version).predict(holdout[rec.feature_columns].to_numpy())
    y = holdout[HOLDOUT_LABEL_COLUMN].to_numpy(dtype=np.float64)
    assert evaluate("binary", y, scores) == rec.metrics


def test_same_snapshot_and_seed_give_byte_identical_models(settings: TrainerSettings, defs: Definitions) -> None:
    a = run_training(settings, "risk", snapshot=make_snapshot(), definitions=defs, seed=11)
    b = run_training(settings, "risk", snapshot=make_snapshot(), definitions=defs, seed=11)
    assert a.record.sha256 == b.record.sha256 and a.record.version + 1 == b.record.version
    assert a.result.model_text == b.result.model_text


def test_validation_rows_are_all_later_than_training_rows(defs: Definitions) -> None:
    ts = build_training_set(make_snapshot(), defs, "risk")
    cut = time_split(ts.times, 0.2)
    assert ts.times[:cut].max() < ts.times[cut:].min()
    assert np.all(np.diff(ts.times) >= 0)


def test_empty_snapshot_fails_clearly(settings: TrainerSettings, defs: Definitions) -> None:
    snap = make_snapshot()
    snap.labels = snap.labels.iloc[0:0]
    with pytest.raises(TrainingDataError, match="no usable 'outcome' label events"):
        run_training(settings, "risk", snapshot=snap, definitions=defs)


def test_labels_with_no_features_fail_clearly(settings: TrainerSettings, defs: Definitions) -> None:
    snap = make_snapshot()
    snap.rows = snap.rows.assign(entity_key="someone-else")
    with pytest.raises(TrainingDataError, match="none of the 3000 labels has an accepted event"):
        run_training(settings, "risk", snapshot=snap, definitions=defs)


def test_unknown_model_and_unknown_snapshot_fail_clearly(settings: TrainerSettings, defs: Definitions) -> None:
    from featurestore.definitions import DefinitionError

    with pytest.raises(DefinitionError, match="no model 'nope'"):
        run_training(settings, "nope", snapshot=make_snapshot(), definitions=defs)
    with pytest.raises(TrainingDataError, match="unknown snapshot 'snap-missing'"):
        run_training(settings, "risk", snapshot_id="snap-missing", definitions=defs)
    with pytest.raises(TrainingDataError, match="no snapshot in"):
        run_training(settings, "risk", definitions=defs)
