"""Train the flight-delay model from a notebook-style script, with the feature store's SDK.

A data scientist's session, cell by cell (`# %%` cells run in Jupyter or VS Code as they are):
freeze what the worker archived into a snapshot, get a point-in-time correct training set for
the `arrived_late` label, look at it, fit LightGBM with the string features as categoricals,
evaluate on the latest fifth of the flights, publish the model to the registry with its
lineage, and point the `production` alias at it so `fti serve --model flight_delay` serves it.

    FTI_DEFINITIONS_PATH=examples/flights/features.yaml python examples/flights/train.py

It reads the same `FTI_` settings as every fti process (registry, offline store, Kafka).
"""

# %% Imports and settings
from __future__ import annotations

import json
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd

from featurestore.sdk import FeatureStore
from featurestore.snapshots import SnapshotStore
from fti_core.settings import FtiSettings, load_settings
from registry.events import KafkaModelEventSink
from registry.models import FeatureRef, LabelRef, ModelRegistry, Vocabulary
from registry.models.metrics import auc

MODEL, LABEL = "flight_delay", "arrived_late"
settings = load_settings(FtiSettings, None)
fs = FeatureStore.from_settings(settings)
model = next(m for m in fs.definitions.models if m.name == MODEL)

# %% Freeze the archive: the model's lineage names the snapshot it was trained on
snapshot = SnapshotStore(settings.offline_root).create(views=fs.definitions.model_views(MODEL))
print(f"snapshot {snapshot.id}")

# %% A point-in-time training set: every feature read at each label's time, nothing later
df = fs.get_historical_features(LABEL, MODEL, snapshot=snapshot.id)
assert isinstance(df, pd.DataFrame)
df = df.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(drop=True)
features = [c for c in df.columns if "__" in c]
print(f"{len(df):,} labelled flights, {df[LABEL].mean():.1%} arrived late; features: {features}")
print(df[features].describe(include="all").T[["count", "mean", "top"]].to_string())

# %% Split by time (the latest fifth is held out) and code the string features
cut = int(len(df) * (1 - model.validation_fraction))
strings = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
vocabularies = [Vocabulary.build(c, df[c].iloc[:cut], model.max_categories) for c in strings]
x = df[features].copy()
for vocab in vocabularies:
    x[vocab.column] = vocab.codes(df[vocab.column])
x = x.astype("float64")
y = df[LABEL].astype("float64").to_numpy()

# %% Fit LightGBM, early-stopped on the held-out flights
params = {"objective": "binary", "verbose": -1, "num_threads": 2, "deterministic": True, **model.params}
train_set = lgb.Dataset(x.iloc[:cut], y[:cut], categorical_feature=strings or "auto", free_raw_data=False)
valid_set = lgb.Dataset(x.iloc[cut:], y[cut:], reference=train_set)
booster = lgb.train(
    params,
    train_set,
    num_boost_round=model.num_boost_round,
    valid_sets=[valid_set],
    callbacks=[lgb.early_stopping(model.early_stopping_rounds, verbose=False)],
)
p = booster.predict(x.iloc[cut:], num_iteration=booster.best_iteration)
score = auc(y[cut:], np.asarray(p, dtype=np.float64))
print(f"held-out AUC {score:.3f} over {len(y) - cut:,} flights ({booster.best_iteration} trees)")

# %% Publish to the registry (LightGBM's own text format) and promote it
refs = [
    FeatureRef(view=v.name, view_version=v.version, feature=f, entity=v.entity)
    for v in fs.definitions.model_views(MODEL)
    for f in v.feature_names
]
assert [r.column for r in refs] == features, "the SDK's columns are the model's feature order"
label = next(lbl for lbl in fs.definitions.labels if lbl.name == LABEL)
registry = ModelRegistry.from_uri(settings.registry_root, events=KafkaModelEventSink(settings))
record = registry.publish(
    MODEL,
    booster.model_to_string(num_iteration=booster.best_iteration).encode(),
    features=refs,
    snapshot_id=snapshot.id,
    code_version="examples/flights/train.py",
    params={k: str(v) for k, v in params.items()},
    metrics={"auc": score},
    task=model.task.value,
    label=LabelRef(name=label.name, event_type=label.event_type, entity=label.entity, field=label.field),
    vocabularies=vocabularies,
)
registry.move_alias(MODEL, "production", record.version, actor="examples/flights/train.py", reason="notebook")
print(json.dumps({"model": MODEL, "version": record.version, "auc": round(score, 4), "rows": len(df)}))
sys.exit(0)
