"""Promotion policy (pure) and the promoter scoring candidate and holder on the same held-out rows."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from fti.v1 import models_pb2
from fti_core.errors import InvalidArgumentError
from registry.events import InMemoryModelEventSink, InMemoryModelEventSource
from registry.models import FeatureRef, ModelRegistry, safe_key
from registry.promotion import HOLDOUT_LABEL_COLUMN, Promoter, PromotionPolicy, decide

from ...waits import async_wait_for

FEATURES = (FeatureRef("v", 1, "signal", "e"), FeatureRef("v", 1, "noise", "e"))


@pytest.mark.parametrize(
    ("metric", "candidate", "current", "margin", "promote"),
    [
        ("auc", 0.90, None, 0.0, True),
        ("auc", 0.90, 0.80, 0.0, True),
        ("auc", 0.80, 0.80, 0.0, False),  # a tie never promotes
        ("auc", 0.81, 0.80, 0.02, False),  # not by the margin
        ("auc", 0.85, 0.80, 0.02, True),
        ("rmse", 1.0, 1.5, 0.1, True),  # lower is better
        ("rmse", 1.5, 1.0, 0.0, False),
        ("auc", float("nan"), None, 0.0, False),
    ],
)
def test_policy(metric: str, candidate: float, current: float | None, margin: float, promote: bool) -> None:
    verdict = decide(metric, candidate, current, margin=margin)
    assert verdict.promote is promote
    assert verdict.evidence["margin"] == margin
    if current is not None:
        assert verdict.evidence[f"current_{metric}"] == current


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    y = (signal + 0.5 * rng.normal(size=n) > 0).astype(float)
    return pd.DataFrame({"v__signal": signal, "v__noise": noise, HOLDOUT_LABEL_COLUMN: y})


def _train(features: list[str], rounds: int) -> bytes:
    df = _data(2000, 1)
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "deterministic": True, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(df[features].to_numpy(), df[HOLDOUT_LABEL_COLUMN].to_numpy()), rounds)
    return booster.model_to_string().encode()


def _publish(reg: ModelRegistry, artefact: bytes) -> int:
    buf = io.BytesIO()
    _data(500, 2).to_parquet(buf)
    return reg.publish(
        "m",
        artefact,
        features=FEATURES,
        entities=["e"],
        snapshot_id="s",
        code_version="t",
        params={},
        metrics={"auc": 0.5},
        task="binary",
        holdout=buf.getvalue(),
    ).version


def test_promoter_promotes_the_better_model_and_declines_the_worse(tmp_path: Path) -> None:
    sink = InMemoryModelEventSink()
    reg = ModelRegistry.from_uri(str(tmp_path), events=sink)
    promoter = Promoter(reg, PromotionPolicy(alias="production", margin=0.01), actor="test")
    weak = _publish(reg, _train(["v__noise", "v__noise"], 5))  # sees only noise
    first = promoter.consider("m", weak)
    assert first is not None and first.promoted and first.reason == "the alias has no holder"
    strong = _publish(reg, _train(["v__signal", "v__noise"], 30))
    decision = promoter.consider("m", strong)
    assert decision is not None and decision.promoted
    assert decision.evidence["candidate_auc"] > decision.evidence["current_auc"] + 0.01
    assert decision.evidence["holdout_rows"] == 500
    assert reg.resolve("m", "production").version == strong  # type: ignore[union-attr]
    worse = _publish(reg, _train(["v__noise", "v__signal"], 1))
    declined = promoter.consider("m", worse)
    assert declined is not None and not declined.promoted
    assert reg.resolve("m", "production").version == strong  # type: ignore[union-attr]
    assert promoter.consider("m", worse) is None  # decided once, recorded
    assert reg.decision("m", "production", worse) == declined
    kinds = [e.WhichOneof("kind") for e in sink.events]
    assert kinds == ["published", "alias_moved", "published", "alias_moved", "published", "promotion_declined"]
    assert sink.events[3].alias_moved.kind == models_pb2.ALIAS_MOVE_KIND_PROMOTED
    assert sink.events[3].alias_moved.evidence["candidate_auc"] == decision.evidence["candidate_auc"]
    assert sink.events[-1].promotion_declined.candidate_version == worse


def test_catch_up_decides_on_versions_published_while_down(tmp_path: Path) -> None:
    reg = ModelRegistry.from_uri(str(tmp_path))
    v = _publish(reg, _train(["v__signal", "v__noise"], 10))
    decisions = Promoter(reg, PromotionPolicy()).catch_up()
    assert [d.candidate_version for d in decisions] == [v]
    assert Promoter(reg, PromotionPolicy()).catch_up() == []


def test_a_holder_published_by_fti_0_1_is_compared_with_a_candidate_naming_entities(tmp_path: Path) -> None:
    reg = ModelRegistry.from_uri(str(tmp_path))
    holder = reg.get("m", _publish(reg, _train(["v__noise", "v__noise"], 5)))
    # Rewrite it as fti 0.1 stored it: the same features, no entity (and no flavor).
    legacy = dataclasses.replace(
        holder, features=tuple(FeatureRef(f.view, f.view_version, f.feature) for f in FEATURES)
    )
    key = safe_key("models", "m", "versions", "0000000001.json")
    (tmp_path / key).write_bytes(legacy.to_json())
    reg = ModelRegistry.from_uri(str(tmp_path))  # no cached record
    assert [f.entity for f in reg.get("m", 1).features] == ["", ""]
    reg.move_alias("m", "production", 1, actor="test")
    strong = _publish(reg, _train(["v__signal", "v__noise"], 30))
    decision = Promoter(reg, PromotionPolicy(margin=0.01)).consider("m", strong)
    assert decision is not None and decision.promoted, decision
    assert decision.evidence["candidate_auc"] > decision.evidence["current_auc"]


def test_a_policy_metric_that_does_not_fit_the_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown metric 'f1'"):
        PromotionPolicy(metric="f1")
    reg = ModelRegistry.from_uri(str(tmp_path))
    v = _publish(reg, _train(["v__signal", "v__noise"], 10))
    with pytest.raises(InvalidArgumentError, match="metric 'rmse' does not fit a binary model"):
        Promoter(reg, PromotionPolicy(metric="rmse")).consider("m", v)
    assert reg.resolve("m", "production") is None


async def test_a_running_promoter_decides_on_a_version_whose_event_it_never_saw(tmp_path: Path) -> None:
    """A new consumer group starts at the end of the topic once its first assignment lands: a
    version published before that has no event for it. The periodic resync decides on it."""
    reg = ModelRegistry.from_uri(str(tmp_path))
    promoter = Promoter(reg, PromotionPolicy(alias="production"), actor="test")
    source = InMemoryModelEventSource()  # no event ever arrives
    running = asyncio.create_task(promoter.run(source, resync_s=0.05))
    try:
        v = _publish(reg, _train(["v__signal", "v__noise"], 10))  # published after start, silently
        await async_wait_for(lambda: reg.decision("m", "production", v) is not None, what="the resync to decide")
        assert reg.resolve("m", "production").version == v  # type: ignore[union-attr]
    finally:
        await source.close()
        await running
