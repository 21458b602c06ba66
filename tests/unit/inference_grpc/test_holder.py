"""Hot swap: follows the alias's current target, ignores stale events, refuses bad artefacts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from fti.v1 import models_pb2
from inference_grpc.holder import ModelHolder
from inference_grpc.listener import ModelEventListener
from inference_grpc.metrics import Metrics
from registry.events import InMemoryModelEventSource, new_event
from registry.models import FeatureRef, ModelRegistry

from .models_helper import (
    FEATURES,
    UncheckedRegistry,
    artefact_path,
    publish_model,
    train_model_text,
    write_version,
)


def _holder(registry: ModelRegistry) -> ModelHolder:
    return ModelHolder(registry, "fraud", "production", metrics=Metrics())


async def test_serves_the_alias_holder_and_predicts_like_lightgbm(tmp_path: Path) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    record = publish_model(registry, "fraud", seed=1)
    registry.move_alias("fraud", "production", record.version, actor="test")
    holder = _holder(registry)
    assert await holder.refresh(reason="test") == "swapped"
    model = holder.require()
    row = [0.3, -1.2, np.nan]
    expected = lgb.Booster(model_str=train_model_text(1)).predict(np.array([row]))[0]
    assert model.version == 1 and model.predict([row]) == [expected]


async def test_no_alias_holder_means_not_loaded(tmp_path: Path) -> None:
    holder = _holder(ModelRegistry.from_uri(str(tmp_path)))
    assert await holder.refresh(reason="test") == "no_target"
    assert holder.current is None


async def test_duplicate_and_stale_events_change_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    v1, v2 = publish_model(registry, "fraud", 1), publish_model(registry, "fraud", 2)
    registry.move_alias("fraud", "production", v1.version, actor="test")
    stale = registry.move_alias("fraud", "production", v2.version, actor="test")
    holder = _holder(registry)
    listener = ModelEventListener(InMemoryModelEventSource(), holder, metrics=Metrics())
    await holder.refresh(reason="start")
    # An old event claiming the alias moved to v1 arrives late: the registry says v2, so v2 stays.
    late = new_event(alias_moved=models_pb2.AliasMoved(model="fraud", alias="production", to_version=1))
    assert await listener.handle(late) == "unchanged"
    assert await listener.handle(new_event(alias_moved=stale.to_proto())) == "unchanged"
    assert holder.require().version == 2
    other = new_event(alias_moved=models_pb2.AliasMoved(model="other", alias="production", to_version=1))
    assert await listener.handle(other) is None


async def test_tampered_artefact_is_refused_and_the_old_version_keeps_serving(tmp_path: Path) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    v1, v2 = publish_model(registry, "fraud", 1), publish_model(registry, "fraud", 2)
    registry.move_alias("fraud", "production", v1.version, actor="test")
    holder = _holder(registry)
    await holder.refresh(reason="start")
    registry.move_alias("fraud", "production", v2.version, actor="test")
    # Corrupted after it was promoted (the registry checks it at the move): valid LightGBM, wrong bytes.
    artefact_path(tmp_path, v2).write_text(train_model_text(99))
    assert await holder.refresh(reason="event") == "refused"
    assert holder.require().version == 1
    assert await holder.refresh(reason="periodic", retry_refused=False) == "refused"
    refused = holder._metrics.registry.get_sample_value(
        "fti_inference_model_swaps_total", {"model": "fraud", "outcome": "refused"}
    )
    assert refused == 1.0


async def test_a_version_of_an_unknown_flavor_is_refused_and_the_current_one_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    v1 = publish_model(registry, "fraud", 1)
    registry.move_alias("fraud", "production", v1.version, actor="test")
    holder = _holder(registry)
    assert await holder.refresh(reason="start") == "swapped"
    foreign = write_version(registry, "fraud", b"an onnx model", flavor="onnx")
    # This registry would refuse the move (it cannot load onnx either); one with that flavor would not.
    UncheckedRegistry.over(registry).move_alias("fraud", "production", foreign.version, actor="test")
    with caplog.at_level(logging.ERROR, logger="inference_grpc.holder"):
        assert await holder.refresh(reason="event") == "refused"
    assert "refused version 2" in caplog.text and "flavor 'onnx', which this process cannot load" in caplog.text
    row = [0.3, -1.2, np.nan]
    expected = lgb.Booster(model_str=train_model_text(1)).predict(np.array([row]))[0]
    assert holder.require().version == 1 and holder.require().predict([row]) == [expected]
    refused = holder._metrics.registry.get_sample_value(
        "fti_inference_model_swaps_total", {"model": "fraud", "outcome": "refused"}
    )
    assert refused == 1.0


async def test_a_version_from_fti_0_1_is_served_from_its_recorded_entities_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    legacy = tuple(FeatureRef(f.view, f.view_version, f.feature) for f in FEATURES)
    old = write_version(registry, "fraud", train_model_text(1).encode(), features=legacy)
    registry.move_alias("fraud", "production", old.version, actor="test")
    holder = _holder(registry)
    with caplog.at_level(logging.WARNING, logger="inference_grpc.model"):
        assert await holder.refresh(reason="start") == "swapped"
    assert "names no entity per feature" in caplog.text and "card_activity:1=card_id" in caplog.text
    assert [(v.view, v.entity) for v in holder.require().layout.views] == [
        ("card_activity", "card_id"),
        ("merchant_activity", "merchant_id"),
    ]


async def test_concurrent_refreshes_swap_once(tmp_path: Path) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    v1 = publish_model(registry, "fraud", 1)
    registry.move_alias("fraud", "production", v1.version, actor="test")
    holder = _holder(registry)
    outcomes = await asyncio.gather(*(holder.refresh(reason=f"r{i}") for i in range(5)))
    assert sorted(outcomes) == ["swapped", "unchanged", "unchanged", "unchanged", "unchanged"]


async def test_swap_on_publish_follows_the_newest_version_not_the_alias(tmp_path: Path) -> None:
    registry = ModelRegistry.from_uri(str(tmp_path))
    v1, v2 = publish_model(registry, "fraud", 1), publish_model(registry, "fraud", 2)
    holder = ModelHolder(registry, "fraud", "production", metrics=Metrics(), follow_latest=True)
    assert v2.version == 2
    listener = ModelEventListener(InMemoryModelEventSource(), holder, metrics=Metrics())
    assert await listener.handle(new_event(published=models_pb2.VersionPublished(version=v1.to_proto()))) == "swapped"
    assert holder.require().version == 2  # the newest, whatever the event said
    registry.move_alias("fraud", "production", v1.version, actor="test")  # the alias is not followed
    assert await holder.refresh(reason="periodic") == "unchanged"
    assert holder.require().version == 2
