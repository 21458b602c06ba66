"""The re-keyed topic's records: the columnar format workers write carries every item exactly,
and the per-item format before it is still read."""

from __future__ import annotations

import math
import random

import pytest
from google.protobuf.message import DecodeError

from feature_stream.records import COLUMNS_FORMAT, ViewItem
from featurestore.values import Scalar, to_value_map
from fti.v1 import rekeyed_pb2
from fti_core.errors import InvalidArgumentError


def _items(rng: random.Random, n: int) -> list[ViewItem]:
    choices: list[Scalar] = [True, False, 0, 1, -(2**63), 2**63 - 1, 0.1, -0.0, 1e300, 5e-324, "", 'é"x', "m0001"]
    out = []
    for i in range(n):
        # Fields in varying order and subsets: a column holds gaps and values of several types.
        names = rng.sample([f"f{j}" for j in range(5)], rng.randrange(5))
        values = {name: rng.choice(choices) for name in names}
        out.append(
            ViewItem(
                f"v{rng.randrange(3)}:1",
                f"k{rng.randrange(50)}",
                f"e{i}",
                rng.randrange(-(2**41), 2**41),
                rng.randrange(-1, 2**41),
                values,
            )
        )
    return out


def _typed(items: list[ViewItem]) -> list[dict[str, tuple[type, str]]]:
    """Each item's values with their types and reprs: bool stays bool, -0.0 stays -0.0."""
    return [{k: (type(v), repr(v)) for k, v in i.values.items()} for i in items]


def _per_item(items: list[ViewItem]) -> bytes:
    """The items as the format before the columnar one wrote them: a `RekeyedBatch`."""
    plain = [
        rekeyed_pb2.RekeyedItem(
            view=i.view_ref,
            entity_key=i.entity_key,
            event_id=i.event_id,
            event_time_ms=i.time_ms,
            watermark_ms=i.watermark_ms,
            values=to_value_map(i.values),
        )
        for i in items
    ]
    return rekeyed_pb2.RekeyedBatch(items=plain).SerializeToString()


@pytest.mark.parametrize("seed", range(5))
def test_both_formats_carry_every_item_exactly(seed: int) -> None:
    items = _items(random.Random(seed), random.Random(seed).choice([1, 7, 400]))
    for data in (ViewItem.encode_many(items), _per_item(items)):
        back = ViewItem.decode_many(data)
        assert back == items
        assert _typed(back) == _typed(items)


def test_a_record_of_no_items_or_no_values() -> None:
    assert ViewItem.encode_many([]) == COLUMNS_FORMAT
    assert ViewItem.decode_many(COLUMNS_FORMAT) == []
    with pytest.raises(DecodeError):
        rekeyed_pb2.RekeyedBatch.FromString(COLUMNS_FORMAT)
    bare = [ViewItem("v:1", "k", f"e{i}", i, -1, {}) for i in range(3)]
    assert ViewItem.decode_many(ViewItem.encode_many(bare)) == bare


def test_a_columnar_record_is_a_zero_byte_then_rekeyed_columns() -> None:
    items = _items(random.Random(9), 50)
    data = ViewItem.encode_many(items)
    assert data[:1] == COLUMNS_FORMAT
    cols = rekeyed_pb2.RekeyedColumns.FromString(data[1:])
    assert [cols.views[i] for i in cols.view_index] == [i.view_ref for i in items]
    assert list(cols.event_ids) == [i.event_id for i in items]
    assert len(data) < len(_per_item(items))


def test_a_reader_of_the_per_item_format_only_refuses_a_columnar_record() -> None:
    # What a worker of the earlier release does with it: a decode error (it dead-letters the
    # record with its bytes), never an empty batch read as if it held nothing.
    data = ViewItem.encode_many(_items(random.Random(2), 20))
    with pytest.raises(DecodeError):
        rekeyed_pb2.RekeyedBatch.FromString(data)


def _garble(mutate: str) -> bytes:
    items = [ViewItem("v:1", f"k{i}", f"e{i}", i, -1, {"x": 1.5, "y": i} if i % 2 else {"x": 2.5}) for i in range(6)]
    cols = rekeyed_pb2.RekeyedColumns.FromString(ViewItem.encode_many(items)[1:])
    if mutate == "short id column":
        del cols.event_ids[-1]
    elif mutate == "kinds shorter than the items":
        cols.values[0].kinds = cols.values[0].kinds[:-1]
    elif mutate == "a value no item takes":
        cols.values[0].doubles.append(9.0)
    elif mutate == "a kind with no value":
        del cols.values[1].ints[-1]
    elif mutate == "an unknown kind":
        kinds = bytearray(cols.values[0].kinds)
        kinds[0] = 7  # item 0's value, taken out of its array: the counts still match
        cols.values[0].kinds = bytes(kinds)
        del cols.values[0].doubles[0]
    elif mutate == "a view index beyond the views":
        cols.view_index[0] = 3
    elif mutate == "two columns of one name":
        cols.values[1].name = cols.values[0].name
    return COLUMNS_FORMAT + cols.SerializeToString()


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        ("short id column", ValueError, "differ in length"),
        ("kinds shorter than the items", ValueError, "does not match its kinds"),
        ("a value no item takes", ValueError, "does not match its kinds"),
        ("a kind with no value", ValueError, "does not match its kinds"),
        ("an unknown kind", ValueError, "unknown kind 7"),
        ("a view index beyond the views", IndexError, None),
        ("two columns of one name", ValueError, "two value columns 'x'"),
    ],
)
def test_a_garbled_columnar_record_raises_instead_of_misplacing_values(
    mutate: str, error: type[Exception], match: str | None
) -> None:
    # The worker dead-letters the record with this error as its reason.
    with pytest.raises(error, match=match):
        ViewItem.decode_many(_garble(mutate))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, object(), None, b"x"])
def test_a_value_the_contract_cannot_carry_is_refused_naming_its_field(bad: object) -> None:
    item = ViewItem("v:1", "k", "e", 1, 0, {"amount": bad})  # type: ignore[dict-item]  # on purpose
    with pytest.raises(InvalidArgumentError, match="amount"):
        ViewItem.encode_many([item])
