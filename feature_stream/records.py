"""What the worker's stages pass each other: raw messages in, view items out, the Kafka outbox.

The re-keyed topic's record holds many items, because Faust's cost per consumed record dwarfs
an item's: a zero byte, then the `fti.v1.RekeyedColumns` Protobuf message (an array per field
for all the items). Records of the formats before it are still read until the next release:
JSON (a list of items, or one item; fti 0.1) and `fti.v1.RekeyedBatch` (a message per item;
written by unreleased builds only).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mypy_extensions import mypyc_attr

from feature_stream.codec import DeadLetter
from featurestore.values import KIND_BOOL, KIND_DOUBLE, KIND_INT64, KIND_STRING, Scalar, from_value_map, value_kind
from fti.v1 import rekeyed_pb2
from fti_core.errors import InvalidArgumentError

__all__ = ["InMessage", "Outbox", "ViewItem"]

# A columnar record's first byte: field number 0 is invalid, so no `RekeyedBatch` starts with it.
COLUMNS_FORMAT = b"\x00"
_NONE = 0  # `fti.v1.ValueColumn.kinds` of an item without a value; the others are `KIND_`s


class InMessage(NamedTuple):
    """A consumed record (one per message: a tuple, the cheapest immutable record to build)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # the record's Kafka timestamp, when known
    # Set for a source's topic (`sources:`): its keys' watermarks are its own, because its
    # partitions need not be assigned with the raw topic's (another count or partitioner).
    own_keys: bool = False

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def state_key(self) -> str:
        # Unkeyed messages share their partition's watermark.
        key = self.key.decode(errors="replace") if self.key else f"~p{self.partition}"
        return f"~t{self.topic}~{key}" if self.own_keys else key


class ViewItem(NamedTuple):
    """One accepted-or-late event routed to one view entity (an item of the re-keyed record).
    A named tuple: one is made per event and view, and a tuple is the cheapest record to build."""

    view_ref: str
    entity_key: str
    event_id: str
    time_ms: int
    watermark_ms: int
    values: Mapping[str, Scalar]

    @classmethod
    def from_proto(cls, item: rekeyed_pb2.RekeyedItem) -> ViewItem:
        values = {k: v for k, v in from_value_map(item.values).items() if v is not None}
        return cls(item.view, item.entity_key, item.event_id, item.event_time_ms, item.watermark_ms, values)

    @staticmethod
    def encode_many(items: Sequence[ViewItem]) -> bytes:
        """The items as one columnar record (`COLUMNS_FORMAT` + `fti.v1.RekeyedColumns`)."""
        views: dict[str, int] = {}
        view_index: list[int] = []
        columns: dict[str, _Column] = {}
        n = len(items)
        for j, item in enumerate(items):
            view_index.append(views.setdefault(item.view_ref, len(views)))
            given: Mapping[str, object] = item.values  # checked by `_Column.add`, whatever a caller passed
            for name, x in given.items():
                column = columns.get(name)
                if column is None:
                    column = columns[name] = _Column(n)
                column.add(j, name, x)
        batch = rekeyed_pb2.RekeyedColumns(
            views=list(views),
            view_index=view_index,
            entity_keys=[i.entity_key for i in items],
            event_ids=[i.event_id for i in items],
            event_time_ms=[i.time_ms for i in items],
            watermark_ms=[i.watermark_ms for i in items],
        )
        for name, c in columns.items():
            v = c.values
            batch.values.add(
                name=name,
                kinds=bytes(c.kinds),
                doubles=v[KIND_DOUBLE],
                ints=v[KIND_INT64],
                strings=v[KIND_STRING],
                bools=v[KIND_BOOL],
            )
        return COLUMNS_FORMAT + batch.SerializeToString()

    @classmethod
    def decode_many(cls, data: bytes) -> list[ViewItem]:
        """A record's items, whichever format it is in. Raises on a record that breaks its
        format's rules (a writer's bug: Kafka's checksums keep corruption out), so the worker
        dead-letters it rather than misplace values."""
        first = data[:1]
        if first == COLUMNS_FORMAT:
            return cls._decode_columns(data[1:])
        if first in (b"[", b"{"):  # the earlier JSON format
            return cls._decode_json(data)
        return [cls.from_proto(i) for i in rekeyed_pb2.RekeyedBatch.FromString(data).items]

    @classmethod
    def _decode_columns(cls, data: bytes) -> list[ViewItem]:
        batch = rekeyed_pb2.RekeyedColumns.FromString(data)
        keys = list(batch.entity_keys)
        n = len(keys)
        ids, times, marks = list(batch.event_ids), list(batch.event_time_ms), list(batch.watermark_ms)
        views, index = list(batch.views), list(batch.view_index)
        if not len(ids) == len(times) == len(marks) == len(index) == n:
            raise ValueError(f"a columnar re-keyed record whose columns differ in length ({n} entity keys)")
        values: list[dict[str, Scalar]] = [{} for _ in range(n)]
        names: set[str] = set()
        for column in batch.values:
            if column.name in names:  # a second column would overwrite the first's values
                raise ValueError(f"a columnar re-keyed record with two value columns {column.name!r}")
            names.add(column.name)
            _fill(values, column)
        return [cls(views[index[j]], keys[j], ids[j], times[j], marks[j], values[j]) for j in range(n)]

    @classmethod
    def _decode_json(cls, data: bytes) -> list[ViewItem]:
        docs: Any = json.loads(data)
        if docs and not isinstance(docs[0], list):  # a single item (the format before packing)
            docs = [docs]
        return [cls(ref, key, eid, int(t), int(wm), values) for ref, key, eid, t, wm, values in docs]


class _Column:
    """One field's values as `encode_many` collects them, for `fti.v1.ValueColumn`."""

    def __init__(self, n: int) -> None:
        self.kinds = bytearray(n)
        self.values: list[list[Any]] = [[], [], [], [], []]  # indexed by kind, as in `_fill`

    def add(self, j: int, name: str, x: object) -> None:
        """Item j's value (`value_kind` refuses what `fti.v1.Value` cannot hold)."""
        try:
            kind = value_kind(x)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{name}: {exc}") from None
        self.kinds[j] = kind
        self.values[kind].append(x)


def _fill(values: list[dict[str, Scalar]], column: rekeyed_pb2.ValueColumn) -> None:
    """Each item's value of one column into its dict (items without one get no entry)."""
    name, kinds = column.name, column.kinds
    doubles, ints, strings, bools = list(column.doubles), list(column.ints), list(column.strings), list(column.bools)
    # Indexed by kind: each kind's values, and how many of them items took so far.
    arrays: list[Sequence[Scalar]] = [[], doubles, ints, strings, bools]
    taken = [0, 0, 0, 0, 0]
    if len(kinds) != len(values) or any(len(arrays[k]) != kinds.count(k) for k in range(1, len(arrays))):
        raise ValueError(f"value column {name!r} does not match its kinds ({len(kinds)} for {len(values)} items)")
    for j, kind in enumerate(kinds):
        if kind == _NONE:
            continue
        if kind > KIND_BOOL:
            raise ValueError(f"value column {name!r}: unknown kind {kind}")
        values[j][name] = arrays[kind][taken[kind]]
        taken[kind] += 1


# Implemented outside the compiled hot path (fti_core.native): Kafka, tests, benches.
@mypyc_attr(allow_interpreted_subclasses=True)
class Outbox(ABC):
    """Kafka outputs: `dead_letter` and `forward` only enqueue; `flush` returns once every
    enqueued message is acknowledged by the broker (and raises if any was not)."""

    @abstractmethod
    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None: ...

    @abstractmethod
    def forward(self, items: Sequence[ViewItem]) -> None:
        """Send items to the re-keyed topic, each entity always to the same partition."""

    @abstractmethod
    async def flush(self) -> None: ...
