"""LightGBM training and evaluation on a TrainingSet: deterministic, early-stopped, time-split.

The evaluation scores the published artefact itself, loaded through the registry's lightgbm
flavor exactly as the promoter and the server load it, so the recorded metrics are those of
the bytes in the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb

from fti_core.tasks import Metric, Task
from registry.flavors import LIGHTGBM, get_flavor
from registry.models.metrics import evaluate
from trainer.dataset import TrainingSet, time_split
from trainer.errors import TrainingDataError

__all__ = ["FLAVOR", "TrainResult", "fit", "lightgbm_params", "params_for_lineage"]

Progress = Callable[[str], None]

# The registry flavor of what `fit` produces.
FLAVOR = LIGHTGBM
_OBJECTIVE = {Task.BINARY: "binary", Task.REGRESSION: "regression"}
# Our metric names -> LightGBM's; the model's metric comes first and drives early stopping.
_LGB_METRIC = {Metric.AUC: "auc", Metric.LOGLOSS: "binary_logloss", Metric.RMSE: "rmse", Metric.MAE: "l1"}


@dataclass(frozen=True)
class TrainResult:
    model_text: str
    params: dict[str, Any]
    metrics: dict[str, float]
    best_iteration: int
    train_rows: int
    valid_rows: int
    split_at_ms: int
    lightgbm_s: float = 0.0  # wall time inside lgb.train (which builds the Datasets), for overhead figures


def lightgbm_params(ts: TrainingSet, *, seed: int | None, num_threads: int) -> dict[str, Any]:
    """The model's params over deterministic defaults: same data + same params -> same bytes."""
    task, metric = ts.model.task, ts.model.metric  # the definitions checked that the metric fits
    params: dict[str, Any] = {
        "objective": _OBJECTIVE[task],
        "metric": [_LGB_METRIC[metric], *(_LGB_METRIC[m] for m in task.metrics if m != metric)],
        "first_metric_only": True,
        "verbosity": -1,
        "seed": 0,
    }
    params.update(ts.model.params)
    if seed is not None:
        params["seed"] = seed
    # Determinism needs these whatever the user set: fixed threads, no row/col-wise auto choice.
    params.update({"deterministic": True, "force_row_wise": True, "num_threads": num_threads})
    return params


def _split(ts: TrainingSet) -> tuple[int, lgb.Dataset, lgb.Dataset]:
    cut = time_split(ts.times, ts.model.validation_fraction)
    if ts.model.task is Task.BINARY:
        for name, part in (("training", ts.y[:cut]), ("validation", ts.y[cut:])):
            if part.min() == part.max():  # one class; a min/max pass instead of a sort
                raise TrainingDataError(f"the {name} rows hold one class only; more labels are needed")
    # String features are category codes: LightGBM splits them as categories, not as numbers.
    categorical: list[int] | Literal["auto"] = ts.categorical or "auto"
    train = lgb.Dataset(
        ts.x[:cut], ts.y[:cut], feature_name=ts.columns, categorical_feature=categorical, free_raw_data=False
    )
    valid = lgb.Dataset(ts.x[cut:], ts.y[cut:], reference=train, free_raw_data=False)
    return cut, train, valid


def _progress_callback(progress: Progress, every: int) -> Callable[[Any], None]:
    def callback(env: Any) -> None:
        if (env.iteration + 1) % every == 0 or env.iteration == 0:
            figures = " ".join(f"{name}={value:.5f}" for _, name, value, _ in env.evaluation_result_list)
            progress(f"round {env.iteration + 1}/{env.end_iteration}: valid {figures}")

    return callback


def fit(
    ts: TrainingSet,
    *,
    seed: int | None = None,
    num_threads: int = 2,
    log_every: int = 25,
    progress: Progress = lambda _msg: None,
) -> TrainResult:
    params = lightgbm_params(ts, seed=seed, num_threads=num_threads)
    cut, train, valid = _split(ts)
    progress(f"split at {int(ts.times[cut])} ms: {cut} training rows, {len(ts.y) - cut} validation rows")
    started = time.perf_counter()
    booster = lgb.train(
        params,
        train,
        num_boost_round=ts.model.num_boost_round,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(ts.model.early_stopping_rounds, first_metric_only=True, verbose=False),
            _progress_callback(progress, log_every),
        ],
    )
    lightgbm_s = time.perf_counter() - started
    best = booster.best_iteration or booster.current_iteration()
    model_text = booster.model_to_string(num_iteration=best)
    predictor = get_flavor(FLAVOR).parse(model_text.encode(), num_threads=num_threads, what="the trained model")
    metrics = evaluate(ts.model.task, ts.y[cut:], predictor.predict(ts.x[cut:]))
    progress(f"best round {best}: " + " ".join(f"{k}={v:.5f}" for k, v in metrics.items()))
    return TrainResult(
        model_text=model_text,
        params=params,
        metrics=metrics,
        best_iteration=best,
        train_rows=cut,
        valid_rows=len(ts.y) - cut,
        split_at_ms=int(ts.times[cut]),
        lightgbm_s=lightgbm_s,
    )


def params_for_lineage(result: TrainResult, extra: Mapping[str, object]) -> dict[str, str]:
    """Everything needed to retrain, as the registry's string map."""
    out = {k: str(v) for k, v in sorted(result.params.items())}
    out |= {"best_iteration": str(result.best_iteration), "train_rows": str(result.train_rows)}
    out |= {"valid_rows": str(result.valid_rows), "split_at_ms": str(result.split_at_ms)}
    out |= {k: str(v) for k, v in extra.items()}
    return out
