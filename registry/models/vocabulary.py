"""Categorical vocabularies: how a string feature's values become the codes a model was trained on.

The trainer builds one per string feature from its training rows (most frequent value first,
ties by value, capped); the registry stores it with the model version; the server maps a
request's string values to codes with it. A value outside the vocabulary gets the shared
"other" code when the training rows had values beyond the cap (so serving sees what training
saw), else it is missing (NaN), which LightGBM routes as it learnt for missing values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from fti.v1 import models_pb2
from fti_core.errors import InvalidArgumentError

__all__ = ["Vocabulary"]

NAN = float("nan")


@dataclass(frozen=True)
class Vocabulary:
    column: str  # the feature's column, "<view>__<feature>"
    values: tuple[str, ...]  # code i is values[i]
    has_other: bool = False  # values beyond the cap were seen and share code len(values)

    def __post_init__(self) -> None:
        if len(set(self.values)) != len(self.values):
            raise InvalidArgumentError(f"vocabulary of {self.column} lists a value twice")

    @classmethod
    def build(cls, column: str, values: Iterable[object], max_categories: int) -> Vocabulary:
        """The vocabulary of the string values among `values` (anything else is missing)."""
        if max_categories < 1:
            raise InvalidArgumentError(f"max_categories must be at least 1, got {max_categories}")
        counts = Counter(v for v in values if isinstance(v, str))
        ordered = sorted(counts, key=lambda v: (-counts[v], v))
        return cls(column, tuple(ordered[:max_categories]), len(ordered) > max_categories)

    @cached_property
    def _codes(self) -> Mapping[str, float]:
        return {v: float(i) for i, v in enumerate(self.values)}

    @property
    def other_code(self) -> float | None:
        return float(len(self.values)) if self.has_other else None

    def code(self, value: object) -> float:
        """The code a model takes for `value`; NaN for a missing or unknown one (see the module docstring)."""
        if not isinstance(value, str):
            return NAN
        found = self._codes.get(value)
        if found is not None:
            return found
        return float(len(self.values)) if self.has_other else NAN

    def codes(self, values: Iterable[object]) -> list[float]:
        return [self.code(v) for v in values]

    def to_proto(self) -> models_pb2.Vocabulary:
        return models_pb2.Vocabulary(column=self.column, values=list(self.values), has_other=self.has_other)

    @classmethod
    def from_proto(cls, msg: models_pb2.Vocabulary) -> Vocabulary:
        return cls(column=msg.column, values=tuple(msg.values), has_other=msg.has_other)
