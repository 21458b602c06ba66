"""Conversion between Python scalars and the `fti.v1.Value` contract."""

from __future__ import annotations

import math
from collections.abc import Mapping

from fti.v1 import values_pb2
from fti_core.errors import InvalidArgumentError

__all__ = [
    "INT64_RANGE",
    "KIND_BOOL",
    "KIND_DOUBLE",
    "KIND_INT64",
    "KIND_STRING",
    "FeatureValue",
    "Scalar",
    "from_value",
    "from_value_map",
    "set_value",
    "to_value",
    "to_value_map",
    "value_kind",
]

Scalar = float | int | str | bool
# A feature's value: a number, the text of a string feature, or missing.
FeatureValue = float | str | None
INT64_RANGE = (-(2**63), 2**63 - 1)
# `fti.v1.Value`'s kinds, numbered as in `fti.v1.ValueColumn.kinds` (0: no value).
KIND_DOUBLE, KIND_INT64, KIND_STRING, KIND_BOOL = 1, 2, 3, 4
_FIELDS = {KIND_DOUBLE: "double_value", KIND_INT64: "int64_value", KIND_STRING: "string_value", KIND_BOOL: "bool_value"}


def to_value(x: Scalar) -> values_pb2.Value:
    """A scalar as an `fti.v1.Value` (`set_value` has the rules)."""
    v = values_pb2.Value()
    set_value(v, x)
    return v


def value_kind(x: object) -> int:
    """Which `fti.v1.Value` field holds `x` (a `KIND_`): non-finite numbers, ints outside
    int64 and other types are refused (so `x` is any object: the check is here, at run time)."""
    # bool is a subclass of int: test it first.
    if isinstance(x, bool):
        return KIND_BOOL
    if isinstance(x, int):
        if not INT64_RANGE[0] <= x <= INT64_RANGE[1]:
            raise InvalidArgumentError(f"value {x} is outside int64")
        return KIND_INT64
    if isinstance(x, float):
        if not math.isfinite(x):
            raise InvalidArgumentError(f"non-finite value {x!r}")
        return KIND_DOUBLE
    if isinstance(x, str):
        return KIND_STRING
    raise InvalidArgumentError(f"unsupported value type {type(x).__name__}")


def set_value(target: values_pb2.Value, x: object) -> None:
    """Set `target` (say a map entry of a message being built) to `x`'s value, in place:
    building a message and copying it into the map cost twice as much. `value_kind` has the
    rules."""
    setattr(target, _FIELDS[value_kind(x)], x)


def from_value(v: values_pb2.Value) -> Scalar | None:
    kind = v.WhichOneof("kind")
    if kind is None:
        return None
    result: Scalar = getattr(v, kind)
    return result


def to_value_map(values: Mapping[str, Scalar | None]) -> dict[str, values_pb2.Value]:
    return {k: to_value(x) for k, x in values.items() if x is not None}


def from_value_map(values: Mapping[str, values_pb2.Value]) -> dict[str, Scalar | None]:
    return {k: from_value(values[k]) for k in values}  # by key: a protobuf map's items() is Python
