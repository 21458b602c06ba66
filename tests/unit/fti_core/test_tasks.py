"""One task enum: each task's metrics, each metric's better direction, and metrics that do not fit refused."""

from __future__ import annotations

import pytest

from fti_core.errors import InvalidArgumentError
from fti_core.tasks import Metric, Task


def test_each_task_lists_its_metrics_primary_first() -> None:
    assert Task.BINARY.metrics == (Metric.AUC, Metric.LOGLOSS) and Task.BINARY.primary_metric is Metric.AUC
    assert Task.REGRESSION.metrics == (Metric.RMSE, Metric.MAE) and Task.REGRESSION.primary_metric is Metric.RMSE


def test_only_auc_is_better_higher() -> None:
    assert {m: m.higher_is_better for m in Metric} == {
        Metric.AUC: True,
        Metric.LOGLOSS: False,
        Metric.RMSE: False,
        Metric.MAE: False,
    }


@pytest.mark.parametrize(
    ("task", "metric", "message"),
    [
        (Task.BINARY, "rmse", "metric 'rmse' does not fit a binary model; use one of: auc, logloss"),
        (Task.REGRESSION, "auc", "metric 'auc' does not fit a regression model; use one of: rmse, mae"),
        (Task.BINARY, "f1", "unknown metric 'f1'; known: auc, logloss, rmse, mae"),
    ],
)
def test_a_metric_that_does_not_fit_the_task_is_refused(task: Task, metric: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        task.check_metric(metric)


def test_tasks_parse_from_their_names_and_refuse_others() -> None:
    assert Task.parse("regression") is Task.REGRESSION and Task.BINARY.check_metric("logloss") is Metric.LOGLOSS
    with pytest.raises(InvalidArgumentError, match="unknown task 'ranking'; known: binary, regression"):
        Task.parse("ranking")
