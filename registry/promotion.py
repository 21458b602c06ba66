"""Promotion: a pure policy, and the promoter that applies it to newly published versions.

The promoter scores the candidate AND the current alias holder on the candidate's own
held-out rows (stored with the version by the trainer), so the two figures compare like
with like; the metrics each version recorded at training time were measured on different
data and are never compared. The verdict and its figures are kept in the registry and
emitted: an AliasMoved (kind PROMOTED, with evidence) or a PromotionDeclined.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from fti_core.errors import ConflictError, FtiError
from fti_core.tasks import Metric, Task
from registry.events import ModelEventSource
from registry.models import ModelRegistry, ModelVersionRecord, PromotionDecisionRecord
from registry.models.metrics import evaluate

__all__ = [
    "HOLDOUT_LABEL_COLUMN",
    "Promoter",
    "PromotionPolicy",
    "Verdict",
    "decide",
]

log = logging.getLogger(__name__)

# The target column of a version's held-out parquet; every other column is a model feature.
HOLDOUT_LABEL_COLUMN = "__label__"


@dataclass(frozen=True)
class PromotionPolicy:
    alias: str = "production"
    metric: str | None = None  # None: the task's primary metric
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.metric:
            Metric.parse(self.metric)  # an unknown name fails at start, not at the first candidate

    def metric_for(self, task: Task) -> Metric:
        """The metric to compare on; one that does not fit the task is an InvalidArgumentError."""
        return task.check_metric(self.metric) if self.metric else task.primary_metric


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    evidence: dict[str, float]


def decide(metric: str, candidate: float, current: float | None, *, margin: float) -> Verdict:
    """Promote when there is no holder, or when the candidate beats it by more than `margin`.

    `margin` is in metric units, in the metric's better direction (AUC up, RMSE down). A
    tie never promotes, so re-publishing an identical model does not churn the alias.
    """
    evidence = {f"candidate_{metric}": candidate, "margin": margin}
    if not math.isfinite(candidate):
        return Verdict(False, f"candidate {metric} is not finite", evidence)
    if current is None:
        return Verdict(True, "the alias has no holder", evidence)
    sign = 1.0 if Metric.parse(metric).higher_is_better else -1.0
    improvement = sign * (candidate - current)
    evidence |= {f"current_{metric}": current, "improvement": improvement}
    figures = f"{metric} {candidate:.6f} vs holder {current:.6f}: improvement {improvement:.6f}"
    if improvement > margin:
        return Verdict(True, f"{figures} > margin {margin}", evidence)
    return Verdict(False, f"{figures} <= margin {margin}", evidence)


def _score(registry: ModelRegistry, record: ModelVersionRecord, holdout: object, metric: str) -> float:
    import pandas as pd

    assert isinstance(holdout, pd.DataFrame)
    predictor = registry.load_predictor(record.model, record.version)
    vocabularies = record.vocabulary_of  # string features are stored as read: coded per version
    x = np.column_stack(
        [
            vocabularies[c].codes(holdout[c]) if c in vocabularies else holdout[c].to_numpy(dtype=np.float64)
            for c in record.feature_columns
        ]
    ).astype(np.float64)
    y = holdout[HOLDOUT_LABEL_COLUMN].to_numpy(dtype=np.float64)
    return evaluate(record.task, y, predictor.predict(x), (metric,))[metric]


def _not_comparable(candidate: ModelVersionRecord, holder: ModelVersionRecord) -> str | None:
    if holder.task != candidate.task or holder.label != candidate.label:
        return "the holder has another task or label"
    # By key: a holder published before features named their entity still compares.
    if not {f.key for f in holder.features} <= {f.key for f in candidate.features}:
        return "the holder needs features the candidate's held-out rows lack"
    if not candidate.holdout_uri:
        return "the candidate stored no held-out rows"
    return None


class Promoter:
    """Applies a PromotionPolicy to published versions. Safe to run as several replicas."""

    def __init__(
        self,
        registry: ModelRegistry,
        policy: PromotionPolicy,
        *,
        actor: str = "fti-promoter",
        models: Collection[str] = (),
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.actor = actor
        self.models = frozenset(models)
        self._clock = clock

    def consider(self, model: str, version: int) -> PromotionDecisionRecord | None:
        """Decide on one candidate; None when it needs no decision (already decided, or the holder)."""
        if self.models and model not in self.models:
            return None
        alias = self.policy.alias
        for _ in range(3):
            if self.registry.decision(model, alias, version) is not None:
                return None
            try:
                return self._consider_once(model, version)
            except ConflictError:
                continue  # someone moved the alias while we scored: look again
        raise ConflictError(f"{model}@{alias}: alias kept moving while deciding on version {version}")

    def _consider_once(self, model: str, version: int) -> PromotionDecisionRecord | None:
        alias = self.policy.alias
        candidate = self.registry.get(model, version)
        holder = self.registry.resolve(model, alias)
        if holder is not None and holder.version == version:
            return None
        # A candidate that no server could load is refused before it is scored: no verdict is
        # recorded or emitted, so a repaired artefact is decided on at the next start.
        self.registry.verify_version(model, version)
        metric = self.policy.metric_for(candidate.task)
        verdict = self._judge(candidate, holder, metric)
        if verdict.promote:
            self.registry.move_alias(
                model,
                alias,
                version,
                kind="promoted",
                actor=self.actor,
                reason=verdict.reason,
                evidence=verdict.evidence,
                expected_from=holder.version if holder else None,
            )
        decision = PromotionDecisionRecord(
            model=model,
            alias=alias,
            candidate_version=version,
            current_version=holder.version if holder else None,
            promoted=verdict.promote,
            reason=verdict.reason,
            evidence=verdict.evidence,
            actor=self.actor,
            at_ms=self._clock(),
        )
        self.registry.record_decision(decision)
        verb = "promoted" if verdict.promote else "declined"
        log.info("%s v%s for %s: %s (%s)", model, version, alias, verb, verdict.reason)
        return decision

    def _judge(self, candidate: ModelVersionRecord, holder: ModelVersionRecord | None, metric: str) -> Verdict:
        import pandas as pd

        data = self.registry.load_holdout(candidate.model, candidate.version)
        if data is None:
            if holder is None:
                return decide(metric, candidate.metrics.get(metric, math.nan), None, margin=self.policy.margin)
            return Verdict(False, "the candidate stored no held-out rows", {})
        holdout = pd.read_parquet(io.BytesIO(data))
        cand_score = _score(self.registry, candidate, holdout, metric)
        if holder is None:
            return decide(metric, cand_score, None, margin=self.policy.margin)
        problem = _not_comparable(candidate, holder)
        if problem is not None:
            return Verdict(False, f"not comparable on the same rows: {problem}", {f"candidate_{metric}": cand_score})
        verdict = decide(metric, cand_score, _score(self.registry, holder, holdout, metric), margin=self.policy.margin)
        verdict.evidence["holdout_rows"] = float(len(holdout))
        return verdict

    def catch_up(self) -> list[PromotionDecisionRecord]:
        """Decide on each model's latest version if nobody did: events missed while down."""
        out = []
        for model in self.models or self.registry.models():
            latest = self.registry.latest(model)
            if latest is not None and (decision := self.consider(model, latest.version)) is not None:
                out.append(decision)
        return out

    async def run(self, source: ModelEventSource, *, stop: asyncio.Event | None = None, resync_s: float = 30.0) -> None:
        """Consume published-version events until `stop` is set or the source ends.

        Events are notifications: every `resync_s` (and at start) the promoter also decides on
        each model's latest version nobody decided on, so a version published while it was
        down, or before a new consumer group's first assignment fixed its position (a new
        group starts at the end of the topic), is still decided on."""
        lock = asyncio.Lock()  # one decision at a time: the event path and the resync share it
        said: set[str] = set()

        async def resync_once() -> None:
            async with lock:
                try:
                    await asyncio.to_thread(self.catch_up)
                except FtiError as exc:
                    if str(exc) not in said:  # a version that stays refused is said once
                        said.add(str(exc))
                        log.error("promotion catch-up failed: %s", exc)

        async def resync() -> None:
            while True:
                await asyncio.sleep(resync_s)
                await resync_once()

        await resync_once()
        resyncing = asyncio.create_task(resync())
        try:
            async for event in source:
                if event.WhichOneof("kind") == "published":
                    v = event.published.version
                    try:
                        async with lock:
                            await asyncio.to_thread(self.consider, v.model, v.version)
                    except FtiError as exc:
                        # One bad version must not stop promotion of the others.
                        log.error("promotion of %s v%s failed: %s", v.model, v.version, exc)
                await source.commit()
                if stop is not None and stop.is_set():
                    break
        finally:
            resyncing.cancel()
