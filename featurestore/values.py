"""Conversion between Python scalars and the `fti.v1.Value` contract."""

from __future__ import annotations

import math
from collections.abc import Mapping

from fti.v1 import values_pb2
from fti_core.errors import InvalidArgumentError

__all__ = ["FeatureValue", "Scalar", "from_value", "from_value_map", "set_value", "to_value", "to_value_map"]

Scalar = float | int | str | bool
# A feature's value: a number, the text of a string feature, or missing.
FeatureValue = float | str | None


def to_value(x: Scalar) -> values_pb2.Value:
    """A scalar as an `fti.v1.Value` (`set_value` has the rules)."""
    v = values_pb2.Value()
    set_value(v, x)
    return v


def set_value(target: values_pb2.Value, x: object) -> None:
    """Set `target` (say a map entry of a message being built) to `x`'s value, in place:
    building a message and copying it into the map cost twice as much. Non-finite numbers
    and other types are refused (so `x` is any object: the check is here, at run time)."""
    # bool is a subclass of int: test it first.
    if isinstance(x, bool):
        target.bool_value = x
    elif isinstance(x, int):
        target.int64_value = x
    elif isinstance(x, float):
        if not math.isfinite(x):
            raise InvalidArgumentError(f"non-finite value {x!r}")
        target.double_value = x
    elif isinstance(x, str):
        target.string_value = x
    else:
        raise InvalidArgumentError(f"unsupported value type {type(x).__name__}")


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
