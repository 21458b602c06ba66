"""Sources: where the events of one event type come from, and how to read them.

The `sources:` section of a definitions file names, per event type, its topic(s), their
format (`fti_event`: the `fti.v1.Event` envelope; `json`; `protobuf`: any message type of a
descriptor set) and, for json and protobuf, how to read each part of an event from a
message: event time, event id, entity keys (one field, or several for a composite key) and
values, as dotted field paths. Event types without a source come from the raw topic as
`fti.v1.Event`, as they always did. Views keep naming event types (`source:`), so one view
definition serves whatever format its events arrive in.
"""

from __future__ import annotations

import functools
import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

if TYPE_CHECKING:
    from featurestore.definitions import Definitions

__all__ = [
    "EventIdDef",
    "EventTimeDef",
    "ProtobufDef",
    "SourceDef",
    "SourceFormat",
    "TimeUnit",
    "WireFormat",
    "check_sources",
    "load_message_class",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A dotted path of field names: `ts`, `driver.id`, `trip.pickup.zone`.
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


class SourceFormat(StrEnum):
    FTI_EVENT = "fti_event"
    JSON = "json"
    PROTOBUF = "protobuf"


class TimeUnit(StrEnum):
    MS = "ms"
    S = "s"
    US = "us"
    NS = "ns"
    ISO8601 = "iso8601"  # text such as 2026-03-01T12:00:00Z (no offset: UTC)


class WireFormat(StrEnum):
    AUTO = "auto"  # the Confluent header when the message starts with one, else plain
    CONFLUENT = "confluent"  # magic byte 0, 4-byte schema id, message-index varints, then the message
    PLAIN = "plain"  # the serialized message alone


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _path(v: str) -> str:
    if not _PATH.match(v):
        raise ValueError(f"{v!r} is not a field path (names joined by dots, such as trip.km)")
    return v


class EventTimeDef(_Strict):
    """`event_time: {field: ts, unit: s}`; a protobuf `google.protobuf.Timestamp` field needs no unit."""

    field: str
    unit: TimeUnit = TimeUnit.MS

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        return _path(v)


class EventIdDef(_Strict):
    """`event_id: {field: ride_id}`, or `event_id: hash` (SHA-256 of the message's content)."""

    field: str | None = None
    hash: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if data == "hash":
            return {"hash": True}
        if isinstance(data, str):
            raise ValueError(f"event_id is `hash` or {{field: PATH}}, not {data!r}")
        return data

    @model_validator(mode="after")
    def _one(self) -> EventIdDef:
        if (self.field is None) == (not self.hash):
            raise ValueError("event_id is either `hash` or {field: PATH}")
        if self.field is not None:
            _path(self.field)
        return self


class ProtobufDef(_Strict):
    """`protobuf: {descriptor_set: rides.binpb, message: acme.rides.v1.Ride, wire_format: auto}`.

    The descriptor set is what `protoc --include_imports --descriptor_set_out=F` or `buf build -o F`
    writes; a relative path is read from the definitions file's folder."""

    descriptor_set: Path
    message: str
    wire_format: WireFormat = WireFormat.AUTO


class SourceDef(_Strict):
    name: str
    event_type: str
    topics: tuple[str, ...]
    format: SourceFormat = SourceFormat.FTI_EVENT
    protobuf: ProtobufDef | None = None
    event_time: EventTimeDef | None = None
    event_id: EventIdDef | None = None
    entities: dict[str, tuple[str, ...]] = {}
    values: dict[str, str] = {}
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a source is a mapping with name, event_type, topics and format")
        data = dict(data)
        if isinstance(data.get("topics"), str):
            data["topics"] = [data["topics"]]
        if isinstance(data.get("entities"), dict):
            # One field, or a list of fields for a composite key.
            data["entities"] = {k: [v] if isinstance(v, str) else v for k, v in data["entities"].items()}
        return data

    @model_validator(mode="after")
    def _check(self) -> SourceDef:
        for what, name in (("source name", self.name), ("event_type", self.event_type)):
            if not _NAME.match(name):
                raise ValueError(f"{what} {name!r} must match {_NAME.pattern}")
        if not self.topics or len(set(self.topics)) != len(self.topics) or not all(self.topics):
            raise ValueError("topics must name at least one topic, each once")
        if self.format is SourceFormat.FTI_EVENT:
            self._check_envelope()
        else:
            self._check_mapping()
        return self

    def _check_envelope(self) -> None:
        given = [k for k in ("protobuf", "event_time", "event_id") if getattr(self, k) is not None]
        given += [k for k in ("entities", "values") if getattr(self, k)]
        if given:
            raise ValueError(f"an fti_event source reads everything from the envelope: drop {given}")

    def _check_mapping(self) -> None:
        if self.event_time is None:
            raise ValueError(
                f"a {self.format.value} source needs event_time: {{field: PATH, unit: ms|s|us|ns|iso8601}}"
            )
        if self.event_id is None:
            raise ValueError(f"a {self.format.value} source needs event_id: {{field: PATH}} or `hash`")
        if not self.entities:
            raise ValueError(f"a {self.format.value} source needs entities: {{ENTITY: PATH or [PATH, ...]}}")
        for entity, paths in self.entities.items():
            if not _NAME.match(entity) or not paths:
                raise ValueError(f"entity {entity!r}: a name matching {_NAME.pattern} with one or more fields")
            for p in paths:
                _path(p)
        for value, p in self.values.items():
            if not value:
                raise ValueError("a value needs a name")
            _path(p)
        if self.format is SourceFormat.PROTOBUF and self.protobuf is None:
            raise ValueError("a protobuf source needs protobuf: {descriptor_set: FILE, message: FULL.NAME}")
        if self.format is SourceFormat.JSON and self.protobuf is not None:
            raise ValueError("protobuf: is for protobuf sources only")

    def resolved(self, base_dir: Path) -> SourceDef:
        """This source with its descriptor set's path read from `base_dir` when relative, checked
        to hold the message type (so a bad path or name fails at load, naming the source)."""
        if self.protobuf is None:
            return self
        path = self.protobuf.descriptor_set
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        pb = self.protobuf.model_copy(update={"descriptor_set": path})
        desc = load_message_class(path, pb.message).DESCRIPTOR
        for what, p in self._paths():
            _check_proto_path(desc, p, timestamp_ok=what == "event_time")
        return self.model_copy(update={"protobuf": pb})

    def _paths(self) -> list[tuple[str, str]]:
        """(what it is, field path) of every field the source reads."""
        out = [("event_time", self.event_time.field)] if self.event_time else []
        if self.event_id is not None and self.event_id.field is not None:
            out.append(("event_id", self.event_id.field))
        out += [(f"entity {e}", p) for e, paths in self.entities.items() for p in paths]
        return out + [(f"value {v}", p) for v, p in self.values.items()]

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"description"})


def check_sources(defs: Definitions) -> None:
    """One source per event type, each topic read by one source, and a json/protobuf source maps
    every entity and field its event type's views (aggregated or tested by a `where:` filter) and
    labels read (else they would read nothing).
    Raises ValueError naming the source."""
    owner: dict[str, str] = {}
    topics: dict[str, str] = {}
    for src in defs.sources:
        if src.event_type in owner:
            raise ValueError(
                f"source {src.name}: event type {src.event_type!r} already comes from source {owner[src.event_type]}"
            )
        owner[src.event_type] = src.name
        for t in src.topics:
            if t in topics:
                raise ValueError(f"source {src.name}: topic {t!r} is already read by source {topics[t]}")
            topics[t] = src.name
    for src in defs.sources:
        if src.format is not SourceFormat.FTI_EVENT:
            _check_mapped(defs, src)


def _check_mapped(defs: Definitions, src: SourceDef) -> None:
    needs: list[tuple[str, str, str]] = []  # (who, "entity" | "value", name)
    for v in defs.views_for_event(src.event_type):
        needs.append((f"view {v.ref}", "entity", v.entity))
        needs += [(f"view {v.ref}", "value", name) for name in sorted(v.read_fields)]  # filters' fields too
    for lbl in defs.labels:
        if lbl.event_type == src.event_type:
            needs += [(f"label {lbl.name}", "entity", lbl.entity), (f"label {lbl.name}", "value", lbl.field)]
    for who, kind, name in needs:
        section = "entities" if kind == "entity" else "values"
        if name not in (src.entities if kind == "entity" else src.values):
            raise ValueError(
                f"source {src.name}: {who} reads {kind} {name!r} of {src.event_type!r}, "
                f"which the source's {section} do not map"
            )


def _check_proto_path(desc: Any, path: str, *, timestamp_ok: bool) -> None:
    """A path names singular fields, messages on the way and a scalar (or, for the event time,
    a `google.protobuf.Timestamp`) at its end."""
    names = path.split(".")
    for i, name in enumerate(names):
        fd = desc.fields_by_name.get(name)
        if fd is None:
            raise ValueError(f"{path}: {desc.full_name} has no field {name!r}")
        if fd.is_repeated:
            raise ValueError(f"{path}: field {name!r} is repeated (or a map), not one value")
        last = i == len(names) - 1
        if fd.message_type is None:
            if not last:
                raise ValueError(f"{path}: field {name!r} is not a message")
            if fd.type == fd.TYPE_BYTES:
                raise ValueError(f"{path}: field {name!r} holds bytes, not a number or text")
            return
        desc = fd.message_type
        if last and not (timestamp_ok and desc.full_name == "google.protobuf.Timestamp"):
            raise ValueError(f"{path}: field {name!r} is a message {desc.full_name}, not a scalar")


def _pool(path: Path) -> descriptor_pool.DescriptorPool:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the descriptor set {path}: {exc.strerror or exc}") from exc
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.MergeFromString(data)
    except DecodeError as exc:
        raise ValueError(f"{path} is not a FileDescriptorSet (protoc --descriptor_set_out / buf build)") from exc
    # A pool of its own: the user's files never clash with ours or another source's.
    pool = descriptor_pool.DescriptorPool()
    pending = list(fds.file)
    while pending:  # add each file after the files it imports (protoc writes them in order, buf may not)
        added = [f for f in pending if all(_has_file(pool, d) for d in f.dependency)]
        if not added:
            missing = sorted({d for f in pending for d in f.dependency if not _has_file(pool, d)})
            raise ValueError(f"{path} lacks imported files {missing} (build it with --include_imports)")
        for f in added:
            pool.Add(f)
        pending = [f for f in pending if f not in added]
    return pool


def _has_file(pool: descriptor_pool.DescriptorPool, name: str) -> bool:
    try:
        pool.FindFileByName(name)
    except KeyError:
        return False
    return True


@functools.cache
def load_message_class(path: Path, message: str) -> type[Message]:
    """The message class of `message` (its full name) in the descriptor set at `path`."""
    pool = _pool(path)
    try:
        desc = pool.FindMessageTypeByName(message)
    except KeyError as exc:
        known = sorted(m for f in _files(pool, path) for m in f)
        raise ValueError(f"{path} holds no message {message!r} (it holds {known[:20]})") from exc
    cls: type[Message] = message_factory.GetMessageClass(desc)
    return cls


def _files(pool: descriptor_pool.DescriptorPool, path: Path) -> list[list[str]]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return [[f"{f.package}.{m.name}" if f.package else m.name for m in f.message_type] for f in fds.file]
