"""Decoding and validating raw events; anything the pipeline cannot use gets a dead-letter reason."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import DecodeError

from feature_stream.decoders import Unmappable, decoder_for
from featurestore.definitions import Definitions
from featurestore.event_schema import FieldRule, check_values
from featurestore.keys import MAX_ENTITY_KEY_CHARS, MAX_EVENT_ID_CHARS
from featurestore.sources import SourceDef, SourceFormat
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


class RawEvent(NamedTuple):
    """A decoded, validated event (one per message: a tuple, the cheapest immutable record)."""

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

    def __init__(self, reason: int, detail: str) -> None:
        # Written out (`fti_core.native`: frozen dataclasses): one per bad event in a flood of them.
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "detail", detail)

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


@dataclass(frozen=True, slots=True)
class _Sources:
    by_topic: dict[str, SourceDef]
    by_event_type: dict[str, SourceDef]


_SOURCES: dict[int, tuple[Definitions, _Sources]] = {}


def _sources(defs: Definitions) -> _Sources:
    cached = _SOURCES.get(id(defs))
    if cached is not None and cached[0] is defs:
        return cached[1]
    found = _Sources(defs.source_topics(), {s.event_type: s for s in defs.sources})
    _SOURCES[id(defs)] = (defs, found)
    return found


def _parse(data: bytes) -> events_pb2.Event | DeadLetter:
    try:
        return events_pb2.Event.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, str(exc) or "not an fti.v1.Event")


def _values(ev: events_pb2.Event) -> dict[str, Scalar] | DeadLetter:
    values: dict[str, Scalar] = {}
    fields = ev.values
    for name in fields:  # by key: a protobuf map's items() is collections.abc's, in Python
        x = from_value(fields[name])
        if x is None:
            continue
        if isinstance(x, float) and not math.isfinite(x):
            return DeadLetter(events_pb2.DEAD_LETTER_REASON_NON_FINITE_VALUE, f"value {name}={x}")
        values[name] = x
    return values


def _entities(ev: events_pb2.Event) -> dict[str, str]:
    keys = ev.entities
    return {k: keys[k] for k in keys}  # not dict(): that goes through collections.abc's keys()


def decode_event(data: bytes | None, defs: Definitions, topic: str | None = None) -> RawEvent | DeadLetter:
    """Decode and validate one message value against the user's definitions.

    `topic` picks the format: a topic a source reads is decoded by that source (`sources:`),
    any other one (the raw topic) holds `fti.v1.Event` envelopes of event types with no source."""
    if not data:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, "empty message")
    source = _sources(defs).by_topic.get(topic) if topic is not None else None
    if source is not None and source.format is not SourceFormat.FTI_EVENT:
        return _decode_mapped(data, defs, source, topic or "")
    ev = _parse(data)
    if isinstance(ev, DeadLetter):
        return ev
    if ev.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_SCHEMA_VERSION, f"schema_version {ev.schema_version}")
    if not ev.event_id:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_MISSING_EVENT_ID, "empty event_id")
    if not ev.HasField("event_time"):
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_MISSING_EVENT_TIME, "no event_time")
    at = ev.event_time  # each read of a message field builds its wrapper again
    wrong = _wrong_topic(defs, ev.event_type, source)
    if wrong is not None:
        return wrong
    if ev.event_type not in _rules(defs):
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE, f"event_type {ev.event_type!r}")
    seconds, nanos = at.seconds, at.nanos
    if not 0 <= nanos < 1_000_000_000:
        return _time_out_of_range(f"event_time {seconds}s {nanos}ns")
    time_ms = seconds * 1000 + nanos // 1_000_000
    values = _values(ev)
    if isinstance(values, DeadLetter):
        return values
    return _validated(
        defs,
        RawEvent(ev.event_id, ev.event_type, time_ms, _entities(ev), values, ev.schema_version, ev.source),
    )


def _wrong_topic(defs: Definitions, event_type: str, source: SourceDef | None) -> DeadLetter | None:
    """An envelope on a source's topic must be of that source's event type; an event type that
    has a source is not read from the raw topic (each event type has one way in)."""
    if source is not None and event_type != source.event_type:
        detail = f"event_type {event_type!r} on a topic of source {source.name} ({source.event_type!r} only)"
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE, detail)
    owner = _sources(defs).by_event_type.get(event_type) if source is None else None
    if owner is not None:
        detail = (
            f"event_type {event_type!r} comes from source {owner.name} (topics {list(owner.topics)}), not this topic"
        )
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE, detail)
    return None


def _decode_mapped(data: bytes, defs: Definitions, source: SourceDef, topic: str) -> RawEvent | DeadLetter:
    """A json or protobuf source's message, mapped to an event and validated like an envelope."""
    rules = _rules(defs)[source.event_type]
    try:
        m = decoder_for(defs, topic, source, frozenset(rules.entities)).decode(data)
    except Unmappable as exc:
        return DeadLetter(exc.reason, f"source {source.name}: {exc.detail}")
    for name, x in m.values.items():
        if isinstance(x, float) and not math.isfinite(x):
            return DeadLetter(events_pb2.DEAD_LETTER_REASON_NON_FINITE_VALUE, f"value {name}={x}")
    return _validated(defs, RawEvent(m.event_id, source.event_type, m.time_ms, m.entities, m.values, 1, source.name))


def _time_out_of_range(what: str) -> DeadLetter:
    return DeadLetter(
        events_pb2.DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE, f"{what} is not within 1900-01-01 and 2200-01-01"
    )


def _validated(defs: Definitions, ev: RawEvent) -> RawEvent | DeadLetter:
    """The checks every event passes whatever its format: known type, time, keys, value rules."""
    rules = _rules(defs).get(ev.event_type)
    if rules is None:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE, f"event_type {ev.event_type!r}")
    if not MIN_EVENT_TIME_MS <= ev.time_ms < MAX_EVENT_TIME_MS:
        return _time_out_of_range(f"event_time {ev.time_ms} ms")
    missing = [e for e in rules.entities if not ev.entities.get(e)]
    if missing:
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_MISSING_ENTITY_KEY, f"missing entities {missing}")
    if len(ev.event_id) > MAX_EVENT_ID_CHARS:
        return DeadLetter(
            events_pb2.DEAD_LETTER_REASON_INVALID_KEY,
            f"an event_id of {len(ev.event_id)} characters (at most {MAX_EVENT_ID_CHARS})",
        )
    long = [e for e in rules.entities if len(ev.entities[e]) > MAX_ENTITY_KEY_CHARS]
    if long:
        return DeadLetter(
            events_pb2.DEAD_LETTER_REASON_INVALID_KEY,
            f"entity key {long[0]} of {len(ev.entities[long[0]])} characters (at most {MAX_ENTITY_KEY_CHARS})",
        )
    bad = check_values(rules.values, ev.values)
    if bad is not None:
        return DeadLetter(_VIOLATIONS[bad.kind], bad.detail)
    return ev
