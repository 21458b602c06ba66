"""Tiny LightGBM models published to a real (local-directory) registry, for inference tests."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from registry.models import FeatureRef, ModelRegistry, ModelVersionRecord

__all__ = ["ENTITIES", "FEATURES", "artefact_path", "publish_model", "train_model_text"]

# Two views keyed by two entity kinds; "txn_count" exists in both, on purpose.
FEATURES = (
    FeatureRef("card_activity", 1, "txn_count"),
    FeatureRef("card_activity", 1, "amount_sum"),
    FeatureRef("merchant_activity", 1, "txn_count"),
)
ENTITIES = ("card_id", "merchant_id")


def train_model_text(seed: int, n_features: int = len(FEATURES)) -> str:
    """A small binary booster in LightGBM's text format; the seed makes each one different."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, n_features))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, -1] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed, "num_leaves": 7}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=5 + seed % 7)
    return str(booster.model_to_string())


def publish_model(registry: ModelRegistry, model: str, seed: int) -> ModelVersionRecord:
    return registry.publish(
        model,
        train_model_text(seed).encode(),
        features=FEATURES,
        entities=ENTITIES,
        snapshot_id=f"snap-{seed}",
        code_version="test",
        params={"seed": str(seed)},
        metrics={"auc": 0.5},
        task="binary",
    )


def artefact_path(registry_root: Path, record: ModelVersionRecord) -> Path:
    return registry_root / record.artefact_uri
