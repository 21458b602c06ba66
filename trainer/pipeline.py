"""`fti train` end to end: snapshot -> point-in-time training set -> LightGBM -> registry."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

from featurestore.definitions import Definitions, load_definitions
from registry.events import ModelEventSink
from registry.models import LabelRef, ModelRegistry, ModelVersionRecord
from registry.promotion import HOLDOUT_LABEL_COLUMN
from trainer.dataset import SnapshotReader, TrainingSet, build_training_set
from trainer.errors import TrainingDataError
from trainer.settings import TrainerSettings
from trainer.train import FLAVOR, TrainResult, fit, params_for_lineage

__all__ = ["TrainOutcome", "code_version", "holdout_parquet", "open_snapshot", "run_training"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainOutcome:
    record: ModelVersionRecord
    result: TrainResult
    timings_s: dict[str, float]


def code_version(settings: TrainerSettings) -> str:
    """The configured code version, else the git commit of this checkout, else the package version."""
    if settings.code_version:
        return settings.code_version
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH, fixed arguments
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return f"fti-kafka=={metadata.version('fti-kafka')}"


def open_snapshot(settings: TrainerSettings, snapshot_id: str | None) -> SnapshotReader:
    from featurestore.snapshots import SnapshotStore
    from fti_core.errors import NotFoundError

    store = SnapshotStore(settings.offline_root)
    if snapshot_id is None:
        latest = store.latest()
        if latest is None:
            raise TrainingDataError(f"no snapshot in {settings.offline_root}; create one with `fti features snapshot`")
        return latest
    try:
        return store.get(snapshot_id)
    except NotFoundError as exc:
        raise TrainingDataError(f"unknown snapshot {snapshot_id!r} in {settings.offline_root}") from exc


def holdout_parquet(ts: TrainingSet, cut: int) -> bytes:
    """The validation rows, stored with the version so a promoter can re-score it and the alias holder."""
    frame = pd.DataFrame(ts.x[cut:], columns=ts.columns)
    for column, values in ts.strings.items():  # as read: each version scored codes them its own way
        frame[column] = pd.Series([v if isinstance(v, str) else None for v in values[cut:]], dtype=object)
    frame[HOLDOUT_LABEL_COLUMN] = ts.y[cut:]
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression="zstd")
    return buf.getvalue()


def run_training(
    settings: TrainerSettings,
    model: str,
    *,
    snapshot: SnapshotReader | None = None,
    snapshot_id: str | None = None,
    seed: int | None = None,
    definitions: Definitions | None = None,
    events: ModelEventSink | None = None,
    progress: Progress = lambda _msg: None,
) -> TrainOutcome:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    defs = definitions or load_definitions(settings.definitions_path)
    snap = snapshot or open_snapshot(settings, snapshot_id)
    progress(f"snapshot {snap.id}; model {model}")
    ts = build_training_set(
        snap,
        defs,
        model,
        allow_exact_matches=settings.exact_matches,
        as_served=settings.as_served,
        progress=progress,
    )
    timings["dataset"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    seed = seed if seed is not None else settings.seed
    result = fit(ts, seed=seed, num_threads=settings.num_threads, log_every=settings.log_every, progress=progress)
    timings["train"] = time.perf_counter() - t1
    timings["lightgbm"] = result.lightgbm_s
    t2 = time.perf_counter()
    registry = ModelRegistry.from_uri(settings.registry_root, events=events)
    record = registry.publish(
        model,
        result.model_text.encode(),
        features=ts.features,
        entities=ts.entities,
        snapshot_id=ts.snapshot_id,
        code_version=code_version(settings),
        params=params_for_lineage(result, {"exact_matches": settings.exact_matches, "as_served": settings.as_served}),
        metrics=result.metrics,
        task=ts.model.task,
        label=LabelRef(**ts.label.model_dump()),
        holdout=holdout_parquet(ts, result.train_rows),
        flavor=FLAVOR,
        vocabularies=ts.vocabularies,
    )
    timings["publish"] = time.perf_counter() - t2
    progress(f"published {record.model} v{record.version} (sha256 {record.sha256[:12]}…)")
    return TrainOutcome(record=record, result=result, timings_s=timings)
