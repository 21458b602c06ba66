"""What an accepted event's values must look like: declared types and ranges, label domains.

The definitions file may declare each event type's fields (`events:`); a field a view or a
label reads and that is not declared gets the rule its readers imply: a numeric aggregate
(sum, mean, min, max, last) needs a number, a distinct count any scalar, a string feature
(last_string, most_frequent) a string, a binary label 0, 1, true or false. A number's
magnitude is capped (`MAX_MAGNITUDE` unless declared), so no window aggregate can overflow
a double. Both engines and every reader apply the same rules, because
an event that breaks one never enters the archive: it is dead-lettered with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, model_validator

from featurestore.values import Scalar

__all__ = [
    "MAX_MAGNITUDE",
    "EventTypeDef",
    "FieldDef",
    "FieldRule",
    "FieldType",
    "Violation",
    "check_values",
    "label_rule",
]

# 1e15 keeps integers exact in a double and leaves a window sum of up to 1e293 events finite.
MAX_MAGNITUDE = 1e15


class FieldType(StrEnum):
    FLOAT = "float"  # any number: an int is accepted and read as a float
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    ANY = "any"  # any scalar (what a distinct count reads)


class FieldDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> FieldDef:
        if (self.min is not None or self.max is not None) and self.type not in (FieldType.FLOAT, FieldType.INT):
            raise ValueError(f"a range needs a numeric type, not {self.type.value}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class EventTypeDef(BaseModel):
    """`events: [{name: transaction, fields: {amount: {type: float, min: 0}}}]` in the definitions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    fields: dict[str, FieldDef]


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # "wrong_type" | "out_of_range" | "label_domain"
    detail: str


@dataclass(frozen=True, slots=True)
class FieldRule:
    type: FieldType
    lo: float = -MAX_MAGNITUDE
    hi: float = MAX_MAGNITUDE
    label_domain: frozenset[float] | None = None  # a binary label's allowed values
    required: bool = False  # a label's field must be present

    @classmethod
    def of(cls, decl: FieldDef) -> FieldRule:
        lo = decl.min if decl.min is not None else -MAX_MAGNITUDE
        hi = decl.max if decl.max is not None else MAX_MAGNITUDE
        return cls(decl.type, max(lo, -MAX_MAGNITUDE), min(hi, MAX_MAGNITUDE))


def _type_ok(kind: FieldType, x: Scalar) -> bool:
    if kind is FieldType.ANY:
        return True
    if kind is FieldType.BOOL:
        return isinstance(x, bool)
    if kind is FieldType.STRING:
        return isinstance(x, str)
    if isinstance(x, bool):  # a bool is an int to Python, never a number here
        return False
    if kind is FieldType.INT:
        return isinstance(x, int)
    return isinstance(x, int | float)


def _check(name: str, rule: FieldRule, x: Scalar) -> Violation | None:
    if rule.label_domain is not None:
        number = float(x) if isinstance(x, bool | int | float) else None
        if number is None or number not in rule.label_domain:
            allowed = ", ".join(f"{v:g}" for v in sorted(rule.label_domain))
            return Violation("label_domain", f"label {name}={x!r} is not one of {allowed} (true/false)")
        return None
    if not _type_ok(rule.type, x):
        return Violation("wrong_type", f"{name}={x!r} is a {type(x).__name__}, not {rule.type.value}")
    if isinstance(x, int | float) and not isinstance(x, bool):
        if isinstance(x, float) and not math.isfinite(x):
            return Violation("out_of_range", f"{name}={x!r} is not finite")
        if not rule.lo <= x <= rule.hi:
            return Violation("out_of_range", f"{name}={x!r} is outside [{rule.lo:g}, {rule.hi:g}]")
    return None


def check_values(rules: Mapping[str, FieldRule], values: Mapping[str, Scalar]) -> Violation | None:
    """The first value that breaks its field's rule (or a missing required one), else None."""
    for name, rule in rules.items():
        x = values.get(name)
        if x is None:
            if rule.required:
                return Violation("label_domain", f"label field {name!r} is missing")
            continue
        bad = _check(name, rule, x)
        if bad is not None:
            return bad
    return None


def label_rule(tasks: Iterable[str]) -> FieldRule:
    """The rule of a label field from the tasks of the models trained on it."""
    tasks = set(tasks)
    if "binary" in tasks:
        return FieldRule(FieldType.ANY, label_domain=frozenset({0.0, 1.0}), required=True)
    if "regression" in tasks:
        return FieldRule(FieldType.FLOAT, required=True)
    return FieldRule(FieldType.ANY, required=True)
