"""Declared and implied value rules: what an event's values must be before anything aggregates them."""

from __future__ import annotations

from typing import Any

import pytest

from feature_stream.codec import DeadLetter, RawEvent, decode_event
from featurestore.definitions import DefinitionError, Definitions, parse_definitions
from featurestore.event_schema import MAX_MAGNITUDE, FieldType
from featurestore.keys import MAX_ENTITY_KEY_CHARS
from featurestore.values import Scalar, to_value
from fti.v1 import events_pb2

VIEW = {
    "name": "spend",
    "version": 1,
    "source": "txn",
    "entity": "card_id",
    "ttl": "1d",
    "features": [
        {"name": "n", "agg": "count", "window": {"size": "1h"}},
        {"name": "total", "agg": "sum", "field": "amount", "window": {"size": "1h"}},
        {"name": "shops", "agg": "distinct_count", "field": "shop", "window": {"size": "1h"}},
    ],
}
LABELS = [{"name": "bad", "event_type": "outcome", "entity": "card_id", "field": "bad"}]
MODELS = [{"name": "m", "task": "binary", "label": "bad", "views": ["spend:1"]}]


def _defs(**extra: Any) -> Definitions:
    return parse_definitions({"views": [VIEW], "labels": LABELS, "models": MODELS, **extra})


def _encode(event_type: str, values: dict[str, Scalar], *, seconds: int = 1_700_000_000, card: str = "c1") -> bytes:
    ev = events_pb2.Event(
        event_id="e1",
        event_type=event_type,
        entities={"card_id": card},
        values={k: to_value(v) for k, v in values.items()},
        schema_version=1,
    )
    ev.event_time.seconds = seconds
    return ev.SerializeToString()


def _reason(result: RawEvent | DeadLetter) -> str:
    return result.reason_name if isinstance(result, DeadLetter) else "accepted"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"amount": 12.5, "shop": "s1"}, "accepted"),
        ({"amount": 12, "shop": 7}, "accepted"),  # an int is a number; a distinct count reads any scalar
        ({"shop": "s1"}, "accepted"),  # a missing value is missing, not wrong
        ({"amount": "12.5"}, "DEAD_LETTER_REASON_WRONG_TYPE"),
        ({"amount": True}, "DEAD_LETTER_REASON_WRONG_TYPE"),  # a bool is not 1.0
        ({"amount": MAX_MAGNITUDE * 10}, "DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE"),
        ({"amount": -MAX_MAGNITUDE * 10}, "DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE"),
        ({"amount": 1e15}, "accepted"),  # the cap itself is in range
    ],
)
def test_implied_rules_of_the_fields_views_read(values: dict[str, Scalar], reason: str) -> None:
    assert _reason(decode_event(_encode("txn", values), _defs())) == reason


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"amount": 0.0, "shop": "s1"}, "accepted"),
        ({"amount": -0.01}, "DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE"),
        ({"amount": 10_001}, "DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE"),
        ({"amount": 5, "shop": 5}, "DEAD_LETTER_REASON_WRONG_TYPE"),  # declared a string
        ({"amount": 5, "channel": 3}, "DEAD_LETTER_REASON_WRONG_TYPE"),  # declared, read by no view
    ],
)
def test_declared_rules_replace_the_implied_ones(values: dict[str, Scalar], reason: str) -> None:
    events = [
        {
            "name": "txn",
            "fields": {
                "amount": {"type": "float", "min": 0, "max": 10_000},
                "shop": {"type": "string"},
                "channel": {"type": "string"},
            },
        }
    ]
    assert _reason(decode_event(_encode("txn", values), _defs(events=events))) == reason


@pytest.mark.parametrize(
    ("label", "reason"),
    [(1, "accepted"), (0.0, "accepted"), (True, "accepted"), (2, "DEAD_LETTER_REASON_LABEL_OUT_OF_DOMAIN")],
)
def test_a_binary_label_is_zero_or_one(label: Scalar, reason: str) -> None:
    assert _reason(decode_event(_encode("outcome", {"bad": label}), _defs())) == reason


def test_a_label_event_without_its_label_is_dead_lettered() -> None:
    assert _reason(decode_event(_encode("outcome", {}), _defs())) == "DEAD_LETTER_REASON_LABEL_OUT_OF_DOMAIN"


@pytest.mark.parametrize(
    ("seconds", "reason"),
    [
        (1_700_000_000, "accepted"),
        (-2_208_988_800, "accepted"),  # 1900-01-01, the earliest
        (-2_208_988_801, "DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE"),
        (7_258_118_400, "DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE"),  # 2200-01-01
        (2**62, "DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE"),
        (-(2**62), "DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE"),
    ],
)
def test_event_times_outside_1900_to_2200_are_dead_lettered(seconds: int, reason: str) -> None:
    assert _reason(decode_event(_encode("txn", {"amount": 1.0}, seconds=seconds), _defs())) == reason


def test_an_entity_key_the_server_would_refuse_is_dead_lettered() -> None:
    longest = _encode("txn", {"amount": 1.0}, card="c" * MAX_ENTITY_KEY_CHARS)
    assert _reason(decode_event(longest, _defs())) == "accepted"
    too_long = _encode("txn", {"amount": 1.0}, card="c" * (MAX_ENTITY_KEY_CHARS + 1))
    assert _reason(decode_event(too_long, _defs())) == "DEAD_LETTER_REASON_INVALID_KEY"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shop": {"type": "string", "min": 0}}, "a range needs a numeric type"),
        ({"amount": {"type": "float", "min": 5, "max": 1}}, "is above max"),
        ({"amount": {"type": "decimal"}}, "type"),
    ],
)
def test_bad_declarations_are_refused_naming_the_event_type(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=f"event txn: .*{message}"):
        _defs(events=[{"name": "txn", "fields": fields}])


def test_rules_of_the_shipped_example() -> None:
    from pathlib import Path

    from featurestore.definitions import load_definitions

    defs = load_definitions(Path(__file__).resolve().parents[3] / "examples" / "fraud" / "features.yaml")
    rules = defs.value_rules()
    assert rules["transaction"]["amount"].type is FieldType.FLOAT and rules["transaction"]["amount"].lo == 0
    assert rules["fraud_label"]["is_fraud"].label_domain == frozenset({0.0, 1.0})
