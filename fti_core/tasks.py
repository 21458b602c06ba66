"""What a model predicts (its task) and the metrics that judge it, with their better direction.

One definition for the definitions file (`ModelDef.task` / `metric`), the registry records,
the trainer's evaluation and the promoter's comparison, so a metric that cannot judge a task
(`rmse` of a probability, `auc` of an amount) is refused where it is written down.
"""

from __future__ import annotations

from enum import StrEnum

from fti_core.errors import InvalidArgumentError

__all__ = ["Metric", "Task"]


class Metric(StrEnum):
    AUC = "auc"
    LOGLOSS = "logloss"
    RMSE = "rmse"
    MAE = "mae"

    @property
    def higher_is_better(self) -> bool:
        return self is Metric.AUC

    @classmethod
    def parse(cls, name: str) -> Metric:
        try:
            return cls(name)
        except ValueError:
            raise InvalidArgumentError(f"unknown metric {name!r}; known: {', '.join(cls)}") from None


class Task(StrEnum):
    BINARY = "binary"
    REGRESSION = "regression"

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The metrics that fit the task, its primary one (the default) first."""
        return _METRICS[self]

    @property
    def primary_metric(self) -> Metric:
        return _METRICS[self][0]

    def check_metric(self, name: str) -> Metric:
        """`name` as a Metric of this task; a metric of another task is refused, saying which fit."""
        metric = Metric.parse(name)
        if metric not in self.metrics:
            fits = ", ".join(self.metrics)
            raise InvalidArgumentError(f"metric {name!r} does not fit a {self.value} model; use one of: {fits}")
        return metric

    @classmethod
    def parse(cls, name: str) -> Task:
        try:
            return cls(name)
        except ValueError:
            raise InvalidArgumentError(f"unknown task {name!r}; known: {', '.join(cls)}") from None


_METRICS: dict[Task, tuple[Metric, ...]] = {
    Task.BINARY: (Metric.AUC, Metric.LOGLOSS),
    Task.REGRESSION: (Metric.RMSE, Metric.MAE),
}
