"""Evaluation metrics, shared by the trainer (recorded at publish) and the promoter (re-scored).

One definition on both sides means a promoter's comparison uses exactly the figure the
trainer recorded. Plain numpy, no scikit-learn at runtime.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fti_core.errors import InvalidArgumentError
from fti_core.tasks import Metric, Task

__all__ = ["auc", "evaluate", "logloss", "mae", "rmse"]

Array = npt.NDArray[np.float64]

_EPS = 1e-15


def _ranks(x: Array) -> Array:
    """1-based ranks with ties given their average rank (the Mann-Whitney convention)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def auc(y: Array, p: Array) -> float:
    """Area under the ROC curve; needs both classes."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise InvalidArgumentError("AUC needs both classes in the evaluation rows")
    r = _ranks(p)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y: Array, p: Array) -> float:
    q = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def rmse(y: Array, p: Array) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y: Array, p: Array) -> float:
    return float(np.mean(np.abs(y - p)))


_FUNCS = {Metric.AUC: auc, Metric.LOGLOSS: logloss, Metric.RMSE: rmse, Metric.MAE: mae}


def evaluate(task: str, y: Array, p: Array, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """The task's metrics (or `names`, which must fit the task) of predictions `p` against targets `y`."""
    if len(y) == 0:
        raise InvalidArgumentError("no rows to evaluate on")
    kind = Task.parse(task)
    wanted = [kind.check_metric(n) for n in names] if names else list(kind.metrics)
    y64, p64 = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return {str(m): _FUNCS[m](y64, p64) for m in wanted}
