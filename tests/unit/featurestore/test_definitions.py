"""Definitions files are validated strictly and errors name the offending view."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from featurestore.definitions import (
    DefinitionError,
    FeatureViewDef,
    load_definitions,
    parse_definitions,
    parse_duration,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "features.yaml"

VIEW: dict[str, Any] = {
    "name": "orders",
    "version": 2,
    "source": "order",
    "entity": "customer_id",
    "ttl": "1d",
    "allowed_lateness": "30s",
    "features": [
        {"name": "n_1h", "agg": "count", "window": {"kind": "hopping", "size": "1h", "step": "10m"}},
        {"name": "spend_1h", "agg": "sum", "field": "total", "window": {"size": "1h"}},
    ],
}


def _with(**changes: Any) -> dict[str, Any]:
    view = copy.deepcopy(VIEW)
    view.update(changes)
    return {"views": [view]}


def test_the_shipped_example_loads() -> None:
    defs = load_definitions(EXAMPLE)
    assert [v.ref for v in defs.model_views("fraud")] == ["card_activity:1", "merchant_activity:1"]
    assert defs.event_types == {"transaction", "fraud_label"}


def test_durations_and_windows_are_parsed() -> None:
    view = parse_definitions(_with()).views[0]
    assert view.ttl_ms == 86_400_000 and view.allowed_lateness_ms == 30_000
    assert (view.features[0].window.size_ms, view.features[0].window.step_ms) == (3_600_000, 600_000)
    assert view.features[1].window.kind == "tumbling" and view.features[1].window.step_ms == 3_600_000
    assert parse_duration("250ms") == 250


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_with(colour="red"), r"view orders:2: colour: Extra inputs are not permitted"),
        (
            _with(features=[{"name": "x", "agg": "sum", "window": {"size": "1m"}}]),
            r"view orders:2: .*sum needs a field",
        ),
        (_with(features=[{"name": "x", "agg": "median", "window": {"size": "1m"}}]), r"view orders:2: .*agg"),
        (
            _with(features=[{"name": "x", "agg": "count", "window": {"kind": "hopping", "size": "7m", "step": "2m"}}]),
            r"view orders:2: .*whole multiple",
        ),
        (_with(ttl="soon"), r"view orders:2: .*bad duration 'soon'"),
        ({"views": [VIEW, VIEW]}, r"view orders:2: defined twice"),
        (
            _with(features=[VIEW["features"][0], VIEW["features"][0]]),
            r"view orders:2: .*duplicate feature names \['n_1h'\]",
        ),
        ({"views": [VIEW], "extra": 1}, r"unknown top-level fields \['extra'\]"),
        (
            {"views": [VIEW], "labels": [], "models": [{"name": "m", "label": "nope", "views": ["orders:2"]}]},
            r"no label 'nope'",
        ),
        (
            {
                "views": [VIEW],
                "labels": [{"name": "y", "event_type": "t", "entity": "customer_id", "field": "v"}],
                "models": [{"name": "m", "label": "y", "views": ["orders:3"]}],
            },
            r"model m: no feature view orders:3",
        ),
    ],
)
def test_bad_definitions_are_refused_naming_the_entry(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_definitions(doc)


def _model(**fields: Any) -> dict[str, Any]:
    label = {"name": "y", "event_type": "t", "entity": "customer_id", "field": "v"}
    return {
        "views": [VIEW],
        "labels": [label],
        "models": [{"name": "m", "label": "y", "views": ["orders:2"], **fields}],
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"task": "binary", "metric": "rmse"},
            r"model m: .*metric 'rmse' does not fit a binary model; use auc or logloss",
        ),
        ({"metric": "mae"}, r"model m: .*metric 'mae' does not fit a binary model"),  # binary is the default task
        ({"task": "regression", "metric": "auc"}, r"model m: .*metric 'auc' does not fit a regression model; use rmse"),
        ({"task": "regression", "metric": "f1"}, r"model m: metric: Input should be 'auc', 'logloss', 'rmse' or 'mae'"),
        ({"task": "ranking"}, r"model m: task: Input should be 'binary' or 'regression'$"),
    ],
)
def test_a_metric_that_does_not_fit_the_models_task_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_definitions(_model(**fields))


@pytest.mark.parametrize(
    ("fields", "task", "metric"),
    [
        ({}, "binary", "auc"),
        ({"task": "regression"}, "regression", "rmse"),
        ({"metric": "logloss"}, "binary", "logloss"),
    ],
)
def test_the_metric_defaults_to_the_tasks_primary_one(fields: dict[str, Any], task: str, metric: str) -> None:
    model = parse_definitions(_model(**fields)).models[0]
    assert (model.task, model.metric) == (task, metric)


def test_content_hash_ignores_description_but_not_semantics() -> None:
    base = parse_definitions(_with()).views[0]
    described = parse_definitions(_with(description="docs only")).views[0]
    changed = parse_definitions(_with(ttl="2d")).views[0]
    assert base.content_hash() == described.content_hash()
    assert base.content_hash() != changed.content_hash()


def test_proto_round_trip_keeps_the_view_and_its_hash() -> None:
    view = parse_definitions(_with()).views[0]
    spec = view.to_proto()
    assert spec.content_hash == view.content_hash()
    assert FeatureViewDef.from_proto(spec) == view


def test_missing_and_invalid_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="does not exist"):
        load_definitions(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("views: [unclosed")
    with pytest.raises(DefinitionError, match="not valid YAML"):
        load_definitions(bad)


STRING_FEATURES = [
    {"name": "last_status", "agg": "last_string", "field": "status", "window": {"size": "1h"}},
    {
        "name": "top_status",
        "agg": "most_frequent",
        "field": "status",
        "window": {"size": "1h", "step": "10m", "kind": "hopping"},
    },
]


def test_string_features_are_string_typed_and_survive_the_proto_round_trip() -> None:
    defs = parse_definitions(_with(features=[*VIEW["features"], *STRING_FEATURES]))
    view = defs.views[0]
    assert [f.is_string for f in view.features] == [False, False, True, True]
    assert FeatureViewDef.from_proto(view.to_proto()) == view
    # The field they read is implied to be a string: a number there is dead-lettered as wrong_type.
    assert defs.value_rules()["order"]["status"].type.value == "string"


@pytest.mark.parametrize(
    ("events", "features", "message"),
    [
        (
            [{"name": "order", "fields": {"status": {"type": "float"}}}],
            STRING_FEATURES[:1],
            r"last_string reads a string field, but order.status is declared float",
        ),
        (
            [{"name": "order", "fields": {"total": {"type": "string"}}}],
            [],
            r"sum reads a float field, but order.total is declared string; use last_string or most_frequent",
        ),
        (
            [],
            [{"name": "status_sum", "agg": "sum", "field": "status", "window": {"size": "1h"}}, *STRING_FEATURES],
            r"feature 'last_status': last_string reads order.status as string, but view orders:2: feature "
            r"'status_sum' reads it as float",
        ),
    ],
)
def test_a_field_read_both_as_text_and_as_a_number_is_refused(
    events: list[dict[str, Any]], features: list[dict[str, Any]], message: str
) -> None:
    doc = _with(features=[*VIEW["features"], *features])
    doc["events"] = events
    with pytest.raises(DefinitionError, match=message):
        parse_definitions(doc)


FILTERED = [
    *VIEW["features"],
    {"name": "big_1h", "agg": "count", "where": "total > 100", "window": {"size": "1h"}},
    {"name": "nl_spend_1h", "agg": "sum", "field": "total", "where": 'country == "NL"', "window": {"size": "1h"}},
]
DERIVED = [{"name": "big_share_1h", "expr": "big_1h / n_1h"}, {"name": "share_pct", "expr": "big_share_1h * 100"}]


def test_views_without_filters_or_derived_features_keep_the_hash_they_always_had() -> None:
    # Computed by the release before `where:` and `derived:` existed: registered views and models stay valid.
    assert parse_definitions(_with()).views[0].content_hash() == (
        "e427e02e91fedc0f635cbe74fec6857053f904d90c7e6df5425aa6773891f2c5"
    )


def test_a_filter_or_derived_feature_changes_the_hash() -> None:
    base = parse_definitions(_with(features=FILTERED)).views[0]
    other_filter = copy.deepcopy(FILTERED)
    other_filter[2]["where"] = "total > 101"
    derived = parse_definitions(_with(features=FILTERED, derived=DERIVED)).views[0]
    other_expr = [DERIVED[0], {"name": "share_pct", "expr": "big_share_1h * 1000"}]
    hashes = {
        parse_definitions(_with()).views[0].content_hash(),
        base.content_hash(),
        parse_definitions(_with(features=other_filter)).views[0].content_hash(),
        derived.content_hash(),
        parse_definitions(_with(features=FILTERED, derived=other_expr)).views[0].content_hash(),
    }
    assert len(hashes) == 5


def test_filters_and_derived_features_travel_in_the_proto_and_name_their_fields() -> None:
    view = parse_definitions(_with(features=FILTERED, derived=DERIVED)).views[0]
    spec = view.to_proto()
    assert [f.where for f in spec.features] == ["", "", "total > 100", 'country == "NL"']
    assert [(d.name, d.expr) for d in spec.derived] == [(d["name"], d["expr"]) for d in DERIVED]
    assert FeatureViewDef.from_proto(spec) == view
    assert FeatureViewDef.from_proto(spec).content_hash() == spec.content_hash
    assert view.feature_names == ["n_1h", "spend_1h", "big_1h", "nl_spend_1h", "big_share_1h", "share_pct"]
    assert view.read_fields == {"total", "country"}  # a filter's field is read too


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {
                "features": [
                    *VIEW["features"],
                    {"name": "x", "agg": "count", "where": "total >> 1", "window": {"size": "1h"}},
                ]
            },
            "view orders:2: features.2: feature 'x': where: operator RShift is not allowed (use + - * /) at column 1",
        ),
        (
            {
                "features": [
                    *VIEW["features"],
                    {"name": "x", "agg": "count", "where": "total.real", "window": {"size": "1h"}},
                ]
            },
            "feature 'x': where: attribute access is not allowed at column 1 of 'total.real'",
        ),
        (
            {"derived": [{"name": "r", "expr": "n_1h / spend_2h"}]},
            "view orders:2: derived feature 'r': expr 'n_1h / spend_2h' reads ['spend_2h'], not features of this view",
        ),
        (
            {"derived": [{"name": "r", "expr": "r2 + 1"}, {"name": "r2", "expr": "n_1h"}]},
            "derived feature 'r': expr 'r2 + 1' reads ['r2']",  # only features defined above it
        ),
        ({"derived": [{"name": "n_1h", "expr": "spend_1h"}]}, "duplicate feature names ['n_1h']"),
        ({"derived": [{"name": "r", "expr": "n_1h +"}]}, "derived.0: derived feature 'r': expr: syntax error"),
        ({"derived": [{"name": "r", "expr": "__import__('os')"}]}, "call of name '__import__' is not allowed"),
    ],
)
def test_bad_filters_and_expressions_are_refused_naming_view_feature_and_column(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError) as err:
        parse_definitions(_with(**changes))
    assert message in str(err.value)


def test_the_document_of_a_view_leaves_unset_new_keys_out_and_reads_back() -> None:
    plain = parse_definitions(_with()).views[0]
    assert "derived" not in plain.document() and all("where" not in f for f in plain.document()["features"])
    rich = parse_definitions(_with(features=FILTERED, derived=DERIVED)).views[0]
    assert FeatureViewDef.model_validate(rich.document()) == rich  # what Redis holds as the view's spec
    assert FeatureViewDef.model_validate(plain.document()) == plain
