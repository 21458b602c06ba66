"""Reading the messages of a json or protobuf source into an event's parts.

A `SourceDecoder` turns one message value into a `Mapped` (event id, event time in ms,
entity keys, typed values), or raises `Unmappable` with the dead-letter reason and a detail
naming the field. `feature_stream.codec` applies to it the same rules as to an `fti.v1.Event`.

* json: a JSON object (a leading Confluent header, magic byte 0 and a 4-byte schema id, is
  skipped). Numbers stay int or float, strings strings, booleans bool; null is absent.
* protobuf: the source's message type from its descriptor set, with or without the
  Confluent header (magic byte 0, 4-byte schema id, zigzag-varint message indexes);
  `auto` looks at the first byte, which is never 0 in a plain message. Scalars map to
  int, float, bool or str, an enum to its value's name, and a `google.protobuf.Timestamp`
  is an event time. A proto3 field without presence reads its default (0, "") when unset.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from featurestore.keys import join_key
from featurestore.sources import SourceDef, SourceFormat, TimeUnit, WireFormat, load_message_class
from featurestore.values import INT64_RANGE, Scalar
from fti.v1 import events_pb2

__all__ = ["Mapped", "SourceDecoder", "Unmappable", "decoder_for"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER_MS = {TimeUnit.MS: 1, TimeUnit.S: 1000, TimeUnit.US: 1 / 1000, TimeUnit.NS: 1 / 1_000_000}
_INT_TO_MS: dict[TimeUnit, Callable[[int], int]] = {
    TimeUnit.MS: lambda x: x,
    TimeUnit.S: lambda x: x * 1000,
    TimeUnit.US: lambda x: x // 1000,
    TimeUnit.NS: lambda x: x // 1_000_000,
}
_MISSING = object()  # a path that leads nowhere (absent, null, or an unset message field)


class Unmappable(Exception):
    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Mapped:
    event_id: str
    time_ms: int
    entities: dict[str, str]
    values: dict[str, Scalar]

    def __init__(self, event_id: str, time_ms: int, entities: dict[str, str], values: dict[str, Scalar]) -> None:
        # Written out (`fti_core.native`: frozen dataclasses): one per event.
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "time_ms", time_ms)
        object.__setattr__(self, "entities", entities)
        object.__setattr__(self, "values", values)


def _unmappable(detail: str) -> Unmappable:
    return Unmappable(events_pb2.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, detail)


class SourceDecoder:
    """One source's message values -> `Mapped`; `required` are the entities its event type's
    views and labels read (an absent one is a dead letter, an absent other one is left out)."""

    def __init__(self, source: SourceDef, required: frozenset[str]) -> None:
        self.source = source
        self.required = required
        self._read: Callable[[bytes], tuple[Any, Callable[[], bytes]]]
        if source.format is SourceFormat.JSON:
            self._read = _read_json
        elif source.format is SourceFormat.PROTOBUF and source.protobuf is not None:
            self._read = _ProtoReader(source).read
        else:
            raise ValueError(f"source {source.name}: format {source.format.value} is not decoded here")

    def decode(self, data: bytes) -> Mapped:
        doc, content = self._read(data)
        src = self.source
        assert src.event_time is not None and src.event_id is not None
        return Mapped(
            event_id=self._event_id(doc, content),
            time_ms=self._time(doc),
            entities=self._entities(doc),
            values={name: x for name, path in src.values.items() if (x := _value(doc, path, name)) is not None},
        )

    def _event_id(self, doc: Any, content: Callable[[], bytes]) -> str:
        spec = self.source.event_id
        assert spec is not None
        if spec.hash or spec.field is None:
            return hashlib.sha256(content()).hexdigest()
        x = _get(doc, spec.field)
        if x is _MISSING or x == "":
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_MISSING_EVENT_ID, f"event_id field {spec.field!r} is absent")
        return _key_text(x, f"event_id field {spec.field!r}")

    def _time(self, doc: Any) -> int:
        spec = self.source.event_time
        assert spec is not None
        x = _get(doc, spec.field)
        if x is _MISSING:
            raise Unmappable(
                events_pb2.DEAD_LETTER_REASON_MISSING_EVENT_TIME, f"event_time field {spec.field!r} is absent"
            )
        return _time_ms(x, spec.unit, spec.field)

    def _entities(self, doc: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for entity, paths in self.source.entities.items():
            parts = [_get(doc, p) for p in paths]
            absent = [p for p, x in zip(paths, parts, strict=True) if x is _MISSING or x == ""]
            if absent:
                if entity in self.required:
                    raise Unmappable(
                        events_pb2.DEAD_LETTER_REASON_MISSING_ENTITY_KEY,
                        f"entity {entity}: field {absent[0]!r} is absent",
                    )
                continue
            texts = [_key_text(x, f"entity {entity} field {p!r}") for p, x in zip(paths, parts, strict=True)]
            out[entity] = join_key(texts) if len(texts) > 1 else texts[0]
        return out


def _get(doc: Any, path: str) -> Any:
    """The value at a dotted path of a JSON object or a protobuf message; `_MISSING` when absent."""
    cur = doc
    walked: list[str] = []
    for name in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(name, _MISSING)
        elif isinstance(cur, Message):
            cur = _proto_field(cur, name)
        else:
            raise _unmappable(f"field {'.'.join(walked)!r} is a {_kind(cur)}, not an object holding {name!r}")
        if cur is _MISSING or cur is None:
            return _MISSING
        walked.append(name)
    return cur


def _proto_field(msg: Message, name: str) -> Any:
    fd: Any = msg.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:  # checked when the definitions load; kept for a descriptor set changed since
        raise _unmappable(f"{msg.DESCRIPTOR.full_name} has no field {name!r}")
    if fd.is_repeated:
        raise _unmappable(f"field {name!r} is repeated, not one value")
    if fd.has_presence and not msg.HasField(name):
        return _MISSING
    x = getattr(msg, name)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        value = fd.enum_type.values_by_number.get(x)
        return value.name if value is not None else x
    if fd.type == FieldDescriptor.TYPE_BYTES:
        raise _unmappable(f"field {name!r} holds bytes, not a number or text")
    return x


def _kind(x: Any) -> str:
    if isinstance(x, Message):
        return f"message {x.DESCRIPTOR.full_name}"
    return {dict: "object", list: "list", str: "text", bool: "bool", int: "int", float: "float"}.get(
        type(x), type(x).__name__
    )


def _key_text(x: Any, what: str) -> str:
    """An entity key or event id: text, or a whole number written in decimal."""
    if isinstance(x, str):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    raise _unmappable(f"{what} is a {_kind(x)}: a key is text or a whole number")


def _value(doc: Any, path: str, name: str) -> Scalar | None:
    x = _get(doc, path)
    if x is _MISSING:
        return None
    if isinstance(x, bool | str | float):
        return x
    if isinstance(x, int):
        if not INT64_RANGE[0] <= x <= INT64_RANGE[1]:
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE, f"value {name}={x} is beyond int64")
        return x
    raise _unmappable(f"value {name} (field {path!r}) is a {_kind(x)}, not a number, text or bool")


def _time_ms(x: Any, unit: TimeUnit, path: str) -> int:
    if isinstance(x, Message) and x.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        seconds, nanos = x.seconds, x.nanos  # type: ignore[attr-defined]
        return int(seconds) * 1000 + int(nanos) // 1_000_000
    if unit is TimeUnit.ISO8601:
        if not isinstance(x, str):
            raise _unmappable(f"event_time field {path!r} is a {_kind(x)}, not ISO-8601 text")
        try:
            dt = datetime.fromisoformat(x)
        except ValueError as exc:
            raise _unmappable(f"event_time field {path!r}: {x[:64]!r} is not ISO-8601") from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # no offset: UTC
        return (dt - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise _unmappable(f"event_time field {path!r} is a {_kind(x)}, not a number of {unit.value}")
    if isinstance(x, int):
        return _INT_TO_MS[unit](x)
    if not math.isfinite(x):
        raise _unmappable(f"event_time field {path!r} is {x}")
    return round(x * _PER_MS[unit])  # a fractional time: the nearest millisecond


# A \uD800-\uDFFF escape: json.loads joins a high and a low one into one character, but leaves
# one alone as a lone surrogate, which is not text.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(doc: Any) -> str | None:
    """The first key or string in `doc` that cannot be UTF-8 (escaped, for the reason), or None."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str):
            try:
                x.encode()
            except UnicodeEncodeError:
                return ascii(x)[:80]
    return None


def _read_json(data: bytes) -> tuple[Any, Callable[[], bytes]]:
    if data[:1] == b"\x00" and len(data) >= 5:  # a Confluent JSON Schema header: magic 0 + schema id
        data = data[5:]
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unmappable(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise Unmappable(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, f"a JSON {_kind(doc)}, not an object")
    if _SURROGATE_ESCAPE.search(data) and (bad := _lone_surrogate(doc)) is not None:
        # Valid JSON, but not text: no Protobuf string, Arrow column or state record can hold
        # it, and one such message failed its whole batch at the re-keyed send, again on
        # every restart.
        raise Unmappable(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, f"a string with a lone surrogate escape: {bad}")
    # The content hash of `event_id: hash` ignores key order and spacing.
    return doc, lambda: json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class _ProtoReader:
    def __init__(self, source: SourceDef) -> None:
        assert source.protobuf is not None
        self.cls = load_message_class(source.protobuf.descriptor_set, source.protobuf.message)
        self.wire = source.protobuf.wire_format
        self.indexes = message_indexes(self.cls.DESCRIPTOR)

    def read(self, data: bytes) -> tuple[Any, Callable[[], bytes]]:
        framed = data[:1] == b"\x00"
        if self.wire is WireFormat.CONFLUENT and not framed:
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "no Confluent header (magic byte 0)")
        if framed and self.wire is not WireFormat.PLAIN:
            data = self._unframe(data)
        msg = self.cls()
        try:
            msg.MergeFromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            detail = f"not a {self.cls.DESCRIPTOR.full_name}: {exc or 'bad bytes'}"
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_UNDECODABLE, detail) from exc
        return msg, lambda: msg.SerializeToString(deterministic=True)

    def _unframe(self, data: bytes) -> bytes:
        if len(data) < 6:
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, f"a Confluent header of {len(data)} bytes")
        pos = 5  # magic byte, 4-byte schema id
        count, pos = _zigzag(data, pos)
        indexes = [0]  # a single 0 stands for the first message of the schema
        if count:
            if not 0 < count <= 64:
                raise Unmappable(events_pb2.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, f"{count} message indexes")
            indexes = []
            for _ in range(count):
                i, pos = _zigzag(data, pos)
                indexes.append(i)
        if indexes != self.indexes:
            detail = (
                f"message indexes {indexes} name another message than {self.cls.DESCRIPTOR.full_name} ({self.indexes})"
            )
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, detail)
        return data[pos:]


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    """One zigzag varint at `pos` -> (value, the position after it)."""
    shift = raw = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise Unmappable(events_pb2.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "a truncated message index")
        b = data[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos


def message_indexes(desc: Any) -> list[int]:
    """Where a message sits in its file (Confluent's message indexes): [2] for the file's third
    top-level message, [0, 1] for the second message nested in the first."""
    path: list[int] = []
    cur: Any = desc
    while cur is not None:
        parent = cur.containing_type
        siblings = parent.nested_types if parent is not None else list(cur.file.message_types_by_name.values())
        path.append([s.full_name for s in siblings].index(cur.full_name))
        cur = parent
    return path[::-1]


# Per definitions object: topic -> decoder (decoders hold compiled message classes).
_DECODERS: dict[int, tuple[object, dict[str, SourceDecoder]]] = {}


def decoder_for(defs: Any, topic: str, source: SourceDef, required: frozenset[str]) -> SourceDecoder:
    """The decoder of `source` for these definitions, built once."""
    cached = _DECODERS.get(id(defs))
    if cached is None or cached[0] is not defs:
        cached = (defs, {})
        _DECODERS[id(defs)] = cached
    found = cached[1].get(topic)
    if found is None:
        found = cached[1][topic] = SourceDecoder(source, required)
    return found
