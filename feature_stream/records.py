"""What the worker's stages pass each other: raw messages in, view items out, the Kafka outbox.

The re-keyed topic's record is the `fti.v1.RekeyedBatch` Protobuf message: many items per
record, because Faust's cost per consumed record dwarfs an item's. Records in the earlier
JSON format (a list of items, or one item) are still read until the next release.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mypy_extensions import mypyc_attr

from feature_stream.codec import DeadLetter
from featurestore.values import Scalar, from_value_map, set_value
from fti.v1 import rekeyed_pb2

__all__ = ["InMessage", "Outbox", "ViewItem"]


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
        """The `RekeyedBatch` of the items, each item and value written in place (building each
        message and copying it into its parent cost 2.5x as much)."""
        batch = rekeyed_pb2.RekeyedBatch()
        add = batch.items.add
        for i in items:
            values = add(
                view=i.view_ref,
                entity_key=i.entity_key,
                event_id=i.event_id,
                event_time_ms=i.time_ms,
                watermark_ms=i.watermark_ms,
            ).values
            given: Mapping[str, object] = i.values  # checked by set_value, whatever a caller passed
            for k, x in given.items():
                set_value(values[k], x)
        return batch.SerializeToString()

    @classmethod
    def decode_many(cls, data: bytes) -> list[ViewItem]:
        if data[:1] in (b"[", b"{"):  # the earlier JSON format
            return cls._decode_json(data)
        return [cls.from_proto(i) for i in rekeyed_pb2.RekeyedBatch.FromString(data).items]

    @classmethod
    def _decode_json(cls, data: bytes) -> list[ViewItem]:
        docs: Any = json.loads(data)
        if docs and not isinstance(docs[0], list):  # a single item (the format before packing)
            docs = [docs]
        return [cls(ref, key, eid, int(t), int(wm), values) for ref, key, eid, t, wm, values in docs]


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
