"""Request-time feature assembly: plain functions over plain data, no I/O.

A model version names its features in feature order as (view, view_version, feature). The
server reads one online-store row per view (keyed by the request's entity key for that
view's entity kind), then builds the vector in the model's order. Anything missing, stale
(older than the view's TTL) or not numeric becomes NaN, which LightGBM treats as missing,
and the response says so feature by feature. A string feature (a categorical to the model)
is coded by the version's vocabulary for it: a value the vocabulary does not know becomes
its "other" code or NaN (`registry.models.Vocabulary`), and the response carries the string.

Which entity kind keys a view is decided once per model version by `view_entities`, from
the version record alone (no feature-view catalogue, no definitions file):

1. each feature names its view's entity (`FeatureRef.entity`, every version published after fti 0.1);
2. a version published by fti 0.1 names none: its recorded `entities` decide, one kind for
   all views, or one kind per view in the order the views first appear among the features
   (deprecated; `is_legacy_layout` tells the loader to warn).

Anything else is ambiguous and the version is refused rather than guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Protocol

from featurestore.keys import MAX_ENTITY_KEY_CHARS
from featurestore.online import OnlineKey, OnlineValue
from fti.v1 import values_pb2
from fti_core.errors import InvalidArgumentError

from .errors import InvalidRequestError

__all__ = [
    "Assembled",
    "Codebook",
    "FeatureLike",
    "FeatureStatus",
    "FeatureUse",
    "ModelLayout",
    "ViewSlot",
    "assemble",
    "is_legacy_layout",
    "layout_for",
    "online_keys",
    "parse_request_values",
    "view_entities",
]

NAN = float("nan")


class FeatureStatus(IntEnum):
    """Mirrors `fti.v1.FeatureStatus` number for number, so conversion is a cast."""

    OK = 1
    MISSING = 2
    STALE = 3
    REQUEST = 4


class Codebook(Protocol):
    """What a registry `Vocabulary` provides: the code a model takes for a string feature's value."""

    def code(self, value: object) -> float: ...


class FeatureLike(Protocol):
    """What a registry `FeatureRef` provides."""

    @property
    def view(self) -> str: ...
    @property
    def view_version(self) -> int: ...
    @property
    def feature(self) -> str: ...
    @property
    def entity(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ViewSlot:
    view: str
    version: int
    entity: str


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """Everything assembly needs about one model version, computed once at load time."""

    features: tuple[tuple[int, str], ...]  # (index into views, feature name), in model order
    views: tuple[ViewSlot, ...]  # distinct views in first-appearance order
    by_name: Mapping[str, tuple[int, ...]]  # "feature" and "view.feature" -> feature positions
    codebooks: Mapping[int, Codebook] = field(default_factory=dict)  # string features' positions -> codes

    @property
    def entity_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.entity for v in self.views))


class FeatureUse(NamedTuple):
    """One per feature per request: a tuple, the cheapest immutable record to build on the hot path."""

    name: str
    view: str
    view_version: int
    status: FeatureStatus
    age_ms: int  # -1 when there is no stored value
    value: float
    text: str = ""  # a string feature's value as read ("" for numbers, or when missing)


@dataclass(frozen=True, slots=True)
class Assembled:
    vector: list[float]
    used: list[FeatureUse]
    stale_or_missing: int = 0  # features counted by `freshness` (a value, but dated or absent state)


def is_legacy_layout(features: Sequence[FeatureLike]) -> bool:
    """True for a version published by fti 0.1, whose features name no entity."""
    return not any(f.entity for f in features)


def _named_entities(features: Sequence[FeatureLike]) -> dict[tuple[str, int], str]:
    named: dict[tuple[str, int], str] = {}
    for f in features:
        view = (f.view, int(f.view_version))
        if not f.entity:
            raise InvalidArgumentError(f"feature {f.view}:{f.view_version}.{f.feature} names no entity")
        if named.setdefault(view, f.entity) != f.entity:
            raise InvalidArgumentError(f"view {view[0]}:{view[1]} is keyed by both {named[view]!r} and {f.entity!r}")
    return named


def _legacy_entities(views: Sequence[tuple[str, int]], entities: Sequence[str]) -> dict[tuple[str, int], str]:
    if len(entities) == 1:
        return dict.fromkeys(views, entities[0])
    if len(entities) == len(views):
        return dict(zip(views, entities, strict=True))
    names = ", ".join(f"{n}:{ver}" for n, ver in views)
    raise InvalidArgumentError(
        f"cannot tell which entity keys views {names}: this version (published by fti 0.1) names no entity per "
        f"feature and records entities {list(entities)} for {len(views)} views; retrain and publish it again"
    )


def view_entities(features: Sequence[FeatureLike], entities: Sequence[str]) -> tuple[ViewSlot, ...]:
    """The entity kind of each view the features use (see the module docstring for the rule)."""
    views = list(dict.fromkeys((f.view, int(f.view_version)) for f in features))
    known = _legacy_entities(views, entities) if is_legacy_layout(features) else _named_entities(features)
    return tuple(ViewSlot(n, ver, known[(n, ver)]) for n, ver in views)


def layout_for(
    features: Sequence[FeatureLike], entities: Sequence[str], codebooks: Mapping[str, Codebook] | None = None
) -> ModelLayout:
    """`codebooks`: the string features' vocabularies by column (`<view>__<feature>`)."""
    views = view_entities(features, entities)
    index = {(v.view, v.version): i for i, v in enumerate(views)}
    slots = tuple((index[(f.view, int(f.view_version))], f.feature) for f in features)
    by_name: dict[str, list[int]] = {}
    for pos, (vi, name) in enumerate(slots):
        by_name.setdefault(name, []).append(pos)
        by_name.setdefault(f"{views[vi].view}.{name}", []).append(pos)
    books = codebooks or {}
    coded = {pos: books[c] for pos, f in enumerate(features) if (c := f"{f.view}__{f.feature}") in books}
    return ModelLayout(slots, views, {k: tuple(v) for k, v in by_name.items()}, coded)


def online_keys(layout: ModelLayout, entities: Mapping[str, str]) -> list[OnlineKey]:
    """One key per view; refuses a request that lacks (or leaves empty) a needed entity key."""
    keys = []
    for view in layout.views:
        key = entities.get(view.entity, "")
        if not key:
            raise InvalidRequestError(
                f"entity key {view.entity!r} is missing or empty; this model needs {list(layout.entity_kinds)}"
            )
        if len(key) > MAX_ENTITY_KEY_CHARS:
            raise InvalidRequestError(f"entity key {view.entity!r} is longer than {MAX_ENTITY_KEY_CHARS} characters")
        keys.append(OnlineKey(view.view, view.version, key))
    return keys


def _request_number(name: str, value: values_pb2.Value) -> float:
    kind = value.WhichOneof("kind")
    if kind == "double_value":
        number = value.double_value
    elif kind in ("int64_value", "bool_value"):
        number = float(getattr(value, kind))
    else:
        shown = "no value" if kind is None else "a string"
        raise InvalidRequestError(f"request value {name!r} has {shown}; features are numbers")
    if not math.isfinite(number):
        raise InvalidRequestError(f"request value {name!r} is {number}; send a finite number or leave it out")
    return number


def _request_value(layout: ModelLayout, name: str, positions: Sequence[int], value: values_pb2.Value) -> float | str:
    strings = [p in layout.codebooks for p in positions]
    if not any(strings):
        return _request_number(name, value)
    if not all(strings) or value.WhichOneof("kind") != "string_value":
        raise InvalidRequestError(f"request value {name!r} is a string feature; send a string")
    return value.string_value


def parse_request_values(layout: ModelLayout, values: Mapping[str, values_pb2.Value]) -> dict[int, float | str]:
    """Request-time values by feature position (`str` for string features). A name is `feature`
    or `view.feature`."""
    out: dict[int, float | str] = {}
    for name, value in values.items():
        positions = layout.by_name.get(name)
        if positions is None:
            raise InvalidRequestError(f"request value {name!r} is not a feature of this model")
        if len(positions) > 1 and "." not in name:
            raise InvalidRequestError(f"request value {name!r} is in several views; name it as view.feature")
        out.update(dict.fromkeys(positions, _request_value(layout, name, positions, value)))
    return out


def _stored_number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, int | float):
        number = float(raw)
        return number if math.isfinite(number) else None
    return None  # strings and absent values cannot feed LightGBM


# Per view of one request: its stored values (None when unusable), the status its features get
# when they have no value of their own, the age reported for them, and whether its features
# count as stale or missing for `freshness` whatever their value (no state, or dated state).
_ViewState = tuple[Mapping[str, object] | None, FeatureStatus, int, bool]


def _view_state(row: OnlineValue | None, now_ms: int) -> _ViewState:
    if row is None:
        return None, FeatureStatus.MISSING, -1, True
    age = row.age_ms(now_ms)
    if row.is_stale(now_ms):
        return None, FeatureStatus.STALE, age, True
    return row.values, FeatureStatus.MISSING, age, row.event_time_ms < 0 or row.is_dated(now_ms)


def _coded(book: Codebook, status: FeatureStatus, raw: object) -> tuple[FeatureStatus, float, str]:
    """A string feature's (status, code, text): OK with its code (NaN when unknown) for a string."""
    if not isinstance(raw, str):
        return status, NAN, ""
    return FeatureStatus.OK, book.code(raw), raw


def assemble(
    layout: ModelLayout, stored: Sequence[OnlineValue | None], overrides: Mapping[int, float | str], now_ms: int
) -> Assembled:
    """The model's input vector and what each feature was, in the model's feature order."""
    # Age and staleness are per view, not per feature: work them out once per row.
    states = [_view_state(row, now_ms) for row in stored]
    vector: list[float] = []
    used: list[FeatureUse] = []
    books = layout.codebooks
    bad = 0
    for pos, (vi, name) in enumerate(layout.features):
        view = layout.views[vi]
        values, status, age, dated = states[vi]
        text = ""
        if pos in books:
            raw = overrides[pos] if pos in overrides else values.get(name) if values is not None else None
            status, number, text = _coded(books[pos], status, raw)
            if pos in overrides:
                status, age = FeatureStatus.REQUEST, 0
            else:
                bad += dated or status is not FeatureStatus.OK
        elif pos in overrides:
            status, number, age = FeatureStatus.REQUEST, float(overrides[pos]), 0
        else:
            found = _stored_number(values.get(name)) if values is not None else None
            status, number = (status, NAN) if found is None else (FeatureStatus.OK, found)
            bad += dated or found is None
        vector.append(number)
        used.append(FeatureUse(name, view.view, view.version, status, age, number, text))
    return Assembled(vector, used, bad)
