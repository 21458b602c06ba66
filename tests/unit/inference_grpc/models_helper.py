"""Tiny LightGBM models published to a real (local-directory) registry, for inference tests."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from featurestore.online import AsyncOnlineStore
from fti_core.tasks import Task
from inference_grpc.holder import ModelHolder
from inference_grpc.metrics import Metrics
from inference_grpc.servicer import InferenceServicer
from inference_grpc.settings import InferenceSettings
from registry.models import FeatureRef, ModelRegistry, ModelVersionRecord, safe_key, sha256_hex

__all__ = [
    "ENTITIES",
    "FEATURES",
    "UncheckedRegistry",
    "artefact_path",
    "publish_model",
    "train_model_text",
    "write_version",
]

# Two views keyed by two entity kinds; "txn_count" exists in both, on purpose.
FEATURES = (
    FeatureRef("card_activity", 1, "txn_count", "card_id"),
    FeatureRef("card_activity", 1, "amount_sum", "card_id"),
    FeatureRef("merchant_activity", 1, "txn_count", "merchant_id"),
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


def write_version(
    registry: ModelRegistry,
    model: str,
    artefact: bytes,
    *,
    features: tuple[FeatureRef, ...] = FEATURES,
    flavor: str = "lightgbm",
) -> ModelVersionRecord:
    """The next version written straight to the store, as a publisher `publish` would refuse writes it:
    one with a flavor this process lacks, or fti 0.1 (features naming no entity). No event is sent."""
    digest = sha256_hex(artefact)
    key = safe_key("models", model, "artefacts", f"{digest}.bin")
    registry.store.put_exclusive(key, artefact)
    latest = registry.latest(model)
    version = (latest.version if latest else 0) + 1
    record = ModelVersionRecord(
        model=model,
        version=version,
        sha256=digest,
        artefact_uri=key,
        features=features,
        entities=ENTITIES,
        snapshot_id="snap-direct",
        code_version="elsewhere",
        params={},
        metrics={"auc": 0.99},
        created_at_ms=0,
        task=Task.BINARY,
        flavor=flavor,
    )
    assert registry.store.put_exclusive(safe_key("models", model, "versions", f"{version:010d}.json"), record.to_json())
    return record


class UncheckedRegistry(ModelRegistry):
    """Moves aliases without loading the target first, as registry clients before that check
    did (or one that has a flavor this process lacks): to test what a server does then."""

    def verify_version(self, model: str, version: int) -> ModelVersionRecord:
        return self.get(model, version)

    @classmethod
    def over(cls, registry: ModelRegistry) -> UncheckedRegistry:
        return cls(registry.store, registry.events)


def artefact_path(registry_root: Path, record: ModelVersionRecord) -> Path:
    return registry_root / record.artefact_uri


async def new_servicer(tmp_path: Path, store: AsyncOnlineStore, **settings: object) -> InferenceServicer:
    """A servicer over a fresh registry whose `production` alias holds a v1 of model `fraud`."""
    registry = ModelRegistry.from_uri(str(tmp_path))
    registry.move_alias("fraud", "production", publish_model(registry, "fraud", 1).version, actor="t")
    holder = ModelHolder(registry, "fraud", "production", metrics=Metrics())
    await holder.refresh(reason="test")
    config = InferenceSettings(model="fraud", data_dir=tmp_path, **settings)  # type: ignore[arg-type]
    return InferenceServicer(holder, store, config, Metrics())
