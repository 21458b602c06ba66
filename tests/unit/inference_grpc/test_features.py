"""Feature assembly: entity resolution, request validation, missing and stale values."""

from __future__ import annotations

import math

import pytest

from featurestore.online import OnlineKey, OnlineValue
from fti.v1 import values_pb2
from fti_core.errors import InvalidArgumentError
from inference_grpc.errors import InvalidRequestError
from inference_grpc.features import (
    FeatureStatus,
    ViewSlot,
    assemble,
    is_legacy_layout,
    layout_for,
    online_keys,
    parse_request_values,
    view_entities,
)
from registry.models import FeatureRef

from .models_helper import ENTITIES, FEATURES

NOW = 1_700_000_000_000


def _row(view: str, values: dict[str, object], age_ms: int = 1000, ttl_ms: int = 60_000) -> OnlineValue:
    return OnlineValue(view, 1, "k", NOW - age_ms, NOW - age_ms, ttl_ms, values)  # type: ignore[arg-type]


def test_each_view_is_keyed_by_the_entity_its_features_name() -> None:
    assert view_entities(FEATURES, ENTITIES) == (
        ViewSlot("card_activity", 1, "card_id"),
        ViewSlot("merchant_activity", 1, "merchant_id"),
    )


def test_three_views_over_two_entity_kinds_need_nothing_but_the_record() -> None:
    # The list of distinct kinds alone cannot say which of three views each keys; the refs do.
    features = (
        FeatureRef("card_activity", 1, "txn_count", "card_id"),
        FeatureRef("merchant_activity", 1, "txn_count", "merchant_id"),
        FeatureRef("card_risk", 2, "score", "card_id"),
    )
    assert [(s.view, s.entity) for s in view_entities(features, ["card_id", "merchant_id"])] == [
        ("card_activity", "card_id"),
        ("merchant_activity", "merchant_id"),
        ("card_risk", "card_id"),
    ]


LEGACY = tuple(FeatureRef(f.view, f.view_version, f.feature) for f in FEATURES)  # as fti 0.1 recorded them


def test_a_legacy_version_maps_views_from_its_recorded_entities() -> None:
    assert is_legacy_layout(LEGACY) and not is_legacy_layout(FEATURES)
    assert [s.entity for s in view_entities(LEGACY, ENTITIES)] == ["card_id", "merchant_id"]
    assert {s.entity for s in view_entities(LEGACY, ["card_id"])} == {"card_id"}


def test_an_ambiguous_legacy_version_is_refused_not_guessed() -> None:
    with pytest.raises(InvalidArgumentError, match=r"cannot tell which entity.*retrain"):
        view_entities(LEGACY, ["a", "b", "c"])


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ((FEATURES[0], FeatureRef("merchant_activity", 1, "txn_count")), "merchant_activity:1.txn_count names no"),
        ((FEATURES[0], FeatureRef("card_activity", 1, "n", "merchant_id")), "keyed by both"),
    ],
)
def test_a_view_without_or_with_two_entities_is_refused(features: tuple[FeatureRef, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        view_entities(features, ENTITIES)


def test_one_online_key_per_view_from_the_request_entities() -> None:
    layout = layout_for(FEATURES, ENTITIES)
    keys = online_keys(layout, {"card_id": "c1", "merchant_id": "m1", "extra": "ignored"})
    assert keys == [OnlineKey("card_activity", 1, "c1"), OnlineKey("merchant_activity", 1, "m1")]


@pytest.mark.parametrize("entities", [{"card_id": "c1"}, {"card_id": "c1", "merchant_id": ""}])
def test_missing_or_empty_entity_key_is_invalid(entities: dict[str, str]) -> None:
    with pytest.raises(InvalidRequestError, match="merchant_id"):
        online_keys(layout_for(FEATURES, ENTITIES), entities)


def test_request_values_by_qualified_or_unique_name() -> None:
    layout = layout_for(FEATURES, ENTITIES)
    got = parse_request_values(
        layout,
        {
            "amount_sum": values_pb2.Value(int64_value=3),
            "merchant_activity.txn_count": values_pb2.Value(bool_value=True),
        },
    )
    assert got == {1: 3.0, 2: 1.0}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("amount_sum", values_pb2.Value(double_value=math.nan), "finite"),
        ("amount_sum", values_pb2.Value(double_value=math.inf), "finite"),
        ("amount_sum", values_pb2.Value(string_value="12"), "string"),
        ("amount_sum", values_pb2.Value(), "no value"),
        ("nope", values_pb2.Value(double_value=1.0), "not a feature"),
        ("txn_count", values_pb2.Value(double_value=1.0), "several views"),
    ],
)
def test_bad_request_values_are_invalid(name: str, value: values_pb2.Value, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_request_values(layout_for(FEATURES, ENTITIES), {name: value})


def test_assemble_marks_ok_missing_stale_and_request_values() -> None:
    layout = layout_for(FEATURES, ENTITIES)
    card = _row("card_activity", {"txn_count": 4, "amount_sum": "not a number"}, age_ms=500)
    merchant = _row("merchant_activity", {"txn_count": 9}, age_ms=120_000)  # older than its TTL
    out = assemble(layout, [card, merchant], {}, NOW)
    assert [u.status for u in out.used] == [FeatureStatus.OK, FeatureStatus.MISSING, FeatureStatus.STALE]
    assert out.vector[0] == 4.0 and math.isnan(out.vector[1]) and math.isnan(out.vector[2])
    assert [u.age_ms for u in out.used] == [500, 500, 120_000]

    out = assemble(layout, [None, None], {2: 7.5}, NOW)
    assert [u.status for u in out.used] == [FeatureStatus.MISSING, FeatureStatus.MISSING, FeatureStatus.REQUEST]
    assert out.used[0].age_ms == -1 and out.vector[2] == 7.5
