"""Decoding and validating raw events; anything the pipeline cannot use gets a dead-letter reason."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from featurestore.definitions import Definitions
from featurestore.event_schema import FieldRule, check_values
from featurestore.keys import MAX_ENTITY_KEY_CHARS, MAX_EVENT_ID_CHARS
from featurestore.values import Scalar, from_value
from fti.v1 import events_pb2

__all__ = ["DLQ_REASON_HEADER", "SUPPORTED_SCHEMA_VERSIONS", "DeadLetter", "RawEvent", "decode_event"]

DLQ_REASON_HEADER = "fti-dlq-reason"
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
# Event times a worker accepts: parquet dates, pandas timestamps and Redis scores all hold them.
MIN_EVENT_TIME_MS = -2_208_988_800_000  # 1900-01-01T00:00:00Z
MAX_EVENT_TIME_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z
_VIOLATIONS = {
    "wrong_type": events_pb2.DEAD_LETTER_REASON_WRONG_TYPE,
    "out_of_range": events_pb2.DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE,
    "label_domain": events_pb2.DEAD_LETTER_REASON_LABEL_OUT_OF_DOMAIN,
}


@dataclass(frozen=True, slots=True)
class RawEvent:
    event_id: str
    event_type: str
    time_ms: int
    entities: Mapping[str, str]
    values: Mapping[str, Scalar]
    schema_version: int
    source: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: int  # fti.v1.DeadLetterReason
    detail: str

    @property
    def reason_name(self) -> str:
        return events_pb2.DeadLetterReason.Name(self.reason)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _TypeRules:
    entities: tuple[str, ...]  # the entity keys an event of the type must carry
    values: dict[str, FieldRule]  # what each value something reads must be


# Per definitions object: event type -> its rules. Deriving them per event (`Definitions.event_types`
# builds a set each call) cost ~10% of the worker's time.
_RULES: dict[int, tuple[Definitions, dict[str, _TypeRules]]] = {}


def _rules(defs: Definitions) -> dict[str, _TypeRules]:
    cached = _RULES.get(id(defs))
    if cached is not None and cached[0] is defs:
        return cached[1]
    values = defs.value_rules()
    rules = {
        t: _TypeRules(
            tuple(
                sorted(
                    {v.entity for v in defs.views_for_event(t)}
                    | {lbl.entity for lbl in defs.labels if lbl.event_type == t}
                )
            ),
            values.get(t, {}),
        )
        for t in defs.event_types
    }
    _RULES[id(defs)] = (defs, rules)
    return rules


def _parse(data: bytes) -> events_pb2.Event | DeadLetter:
    try:
        return events_pb2.Event.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, str(exc) or "not an fti.v1.Event")


def _values(ev: events_pb2.Event) -> dict[str, Scalar] | DeadLetter:
    values: dict[str, Scalar] = {}
    for name, v in ev.values.items():
        x = from_value(v)
        if x is None:
            continue
        if isinstance(x, float) and not math.isfinite(x):
            return DeadLetter(events_pb2.DEAD_LETTER_REASON_NON_FINITE_VALUE, f"value {name}={x}")
        values[name] = x
    return values


def decode_event(data: bytes | None, defs: Definitions) -> RawEvent | DeadLetter:
    """Decode and validate one message value against the user's definitions."""
    if not data:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, "empty message")
    ev = _parse(data)
    if isinstance(ev, DeadLetter):
        return ev
    if ev.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_SCHEMA_VERSION, f"schema_version {ev.schema_version}")
    if not ev.event_id:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_MISSING_EVENT_ID, "empty event_id")
    if not ev.HasField("event_time"):
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_MISSING_EVENT_TIME, "no event_time")
    rules = _rules(defs).get(ev.event_type)
    if rules is None:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE, f"event_type {ev.event_type!r}")
    time_ms = ev.event_time.seconds * 1000 + ev.event_time.nanos // 1_000_000
    if not MIN_EVENT_TIME_MS <= time_ms < MAX_EVENT_TIME_MS or not 0 <= ev.event_time.nanos < 1_000_000_000:
        return DeadLetter(
            events_pb2.DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE,
            f"event_time {ev.event_time.seconds}s {ev.event_time.nanos}ns is not within 1900-01-01 and 2200-01-01",
        )
    entities = dict(ev.entities)
    missing = [e for e in rules.entities if not entities.get(e)]
    if missing:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_MISSING_ENTITY_KEY, f"missing entities {missing}")
    if len(ev.event_id) > MAX_EVENT_ID_CHARS:
        return DeadLetter(
            events_pb2.DEAD_LETTER_REASON_INVALID_KEY,
            f"an event_id of {len(ev.event_id)} characters (at most {MAX_EVENT_ID_CHARS})",
        )
    long = [e for e in rules.entities if len(entities[e]) > MAX_ENTITY_KEY_CHARS]
    if long:
        return DeadLetter(
            events_pb2.DEAD_LETTER_REASON_INVALID_KEY,
            f"entity key {long[0]} of {len(entities[long[0]])} characters (at most {MAX_ENTITY_KEY_CHARS})",
        )
    values = _values(ev)
    if isinstance(values, DeadLetter):
        return values
    bad = check_values(rules.values, values)
    if bad is not None:
        return DeadLetter(_VIOLATIONS[bad.kind], bad.detail)
    return RawEvent(
        event_id=ev.event_id,
        event_type=ev.event_type,
        time_ms=time_ms,
        entities=entities,
        values=values,
        schema_version=ev.schema_version,
        source=ev.source,
    )
