"""Feature definitions owned by the user: feature views, labels and model feature sets.

A definitions file is YAML (see `examples/fraud/features.yaml`). Loading validates it
strictly and refuses with a message naming the offending view: unknown fields, duplicate
names, bad windows, references to views or labels that do not exist. Event types are plain
names here, so a user adds one without editing pipeline code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from google.protobuf.duration_pb2 import Duration
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from featurestore.event_schema import EventTypeDef, FieldRule, FieldType, label_rule
from featurestore.expressions import Expression, ExpressionError, parse_expression
from featurestore.sources import SourceDef, check_sources
from fti.v1 import features_pb2
from fti_core.errors import InvalidArgumentError
from fti_core.tasks import Metric, Task

__all__ = [
    "STRING_AGGREGATIONS",
    "AggregationFunction",
    "DefinitionError",
    "Definitions",
    "DerivedDef",
    "EventTypeDef",
    "FeatureDef",
    "FeatureViewDef",
    "LabelDef",
    "ModelDef",
    "SourceDef",
    "WindowDef",
    "load_definitions",
    "parse_definitions",
    "parse_duration",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class DefinitionError(InvalidArgumentError):
    """A definitions file that cannot be accepted; the message names the view or entry."""


def parse_duration(text: str | int) -> int:
    """'90s', '5m', '1h', '7d', '250ms' (or plain milliseconds) -> milliseconds."""
    if isinstance(text, int):
        return text
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}: use a whole number with ms, s, m, h or d")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def _duration_pb(ms: int) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(milliseconds=ms))
    return d


class AggregationFunction(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    DISTINCT_COUNT = "distinct_count"
    LAST_STRING = "last_string"
    MOST_FREQUENT = "most_frequent"

    @property
    def is_string(self) -> bool:
        """Whether the feature's value is text (a categorical to a model) rather than a number."""
        return self in STRING_AGGREGATIONS


# Aggregations whose value is a string: they read a string field and feed models as categoricals.
STRING_AGGREGATIONS = frozenset({AggregationFunction.LAST_STRING, AggregationFunction.MOST_FREQUENT})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowDef(_Strict):
    """Event-time window. Tumbling: step == size. Hopping/sliding: step < size, size a multiple of step."""

    kind: Literal["tumbling", "hopping"] = "tumbling"
    size_ms: int
    step_ms: int

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a window is a mapping with size (and step for hopping windows)")
        data = dict(data)
        if "size" in data:
            data["size_ms"] = parse_duration(data.pop("size"))
        if "step" in data:
            data["step_ms"] = parse_duration(data.pop("step"))
        if data.get("kind", "tumbling") == "tumbling":
            data.setdefault("step_ms", data.get("size_ms"))
        return data

    @model_validator(mode="after")
    def _check(self) -> WindowDef:
        if self.size_ms <= 0 or self.step_ms <= 0:
            raise ValueError("window size and step must be positive")
        if self.kind == "tumbling" and self.step_ms != self.size_ms:
            raise ValueError("a tumbling window's step equals its size")
        if self.size_ms % self.step_ms:
            raise ValueError("window size must be a whole multiple of its step")
        return self


def _parsed(what: str, text: str) -> Expression:
    try:
        return parse_expression(text)
    except ExpressionError as exc:
        raise ValueError(f"{what}: {exc}") from exc


class FeatureDef(_Strict):
    name: str
    agg: AggregationFunction
    field: str | None = None
    window: WindowDef
    where: str | None = None  # a filter (featurestore.expressions): events it is not true of do not count

    @property
    def is_string(self) -> bool:
        """A string feature: its value is text (`last_string`, `most_frequent`), else a number or missing."""
        return self.agg.is_string

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"feature name {v!r} must match {_NAME.pattern}")
        return v

    @model_validator(mode="after")
    def _field_needed(self) -> FeatureDef:
        if self.agg is not AggregationFunction.COUNT and not self.field:
            raise ValueError(f"feature {self.name!r}: {self.agg.value} needs a field")
        if self.where is not None:
            _parsed(f"feature {self.name!r}: where", self.where)
        return self

    @property
    def filter(self) -> Expression | None:
        """The parsed `where` (parses are cached by text)."""
        return None if self.where is None else parse_expression(self.where)


class DerivedDef(_Strict):
    """A feature computed at read time from the view's other features: `expr` over their names."""

    name: str
    expr: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"feature name {v!r} must match {_NAME.pattern}")
        return v

    @model_validator(mode="after")
    def _parses(self) -> DerivedDef:
        _parsed(f"derived feature {self.name!r}: expr", self.expr)
        return self

    @property
    def expression(self) -> Expression:
        return parse_expression(self.expr)


# Feature keys added after views were first hashed: left out of `canonical()` while unset.
_UNSET_OMITTED = ("where",)


class FeatureViewDef(_Strict):
    name: str
    version: int
    source: str
    entity: str
    features: tuple[FeatureDef, ...]
    derived: tuple[DerivedDef, ...] = ()
    allowed_lateness_ms: int = 0
    ttl_ms: int
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "ttl" in data:
                data["ttl_ms"] = parse_duration(data.pop("ttl"))
            if "allowed_lateness" in data:
                data["allowed_lateness_ms"] = parse_duration(data.pop("allowed_lateness"))
        return data

    @model_validator(mode="after")
    def _check(self) -> FeatureViewDef:
        if not _NAME.match(self.name):
            raise ValueError(f"view name {self.name!r} must match {_NAME.pattern}")
        if self.version < 1:
            raise ValueError("version must be >= 1")
        if not self.features:
            raise ValueError("a view needs at least one feature")
        names = self.feature_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names {dupes}")
        if self.ttl_ms <= 0 or self.allowed_lateness_ms < 0:
            raise ValueError("ttl must be positive and allowed_lateness non-negative")
        known = {f.name for f in self.features}
        for d in self.derived:  # over the view's features, or derived ones defined above it
            unknown = sorted(d.expression.names - known)
            if unknown:
                raise ValueError(
                    f"derived feature {d.name!r}: expr {d.expr!r} reads {unknown}, not features of this view "
                    f"(known: {sorted(known)})"
                )
            known.add(d.name)
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def feature_names(self) -> list[str]:
        """Every feature a read returns, in order: the aggregated ones, then the derived ones."""
        return [f.name for f in self.features] + [d.name for d in self.derived]

    @property
    def read_fields(self) -> frozenset[str]:
        """The event fields the view reads: aggregated fields and the fields its filters test."""
        fields = {f.field for f in self.features if f.field}
        for f in self.features:
            if f.filter is not None:
                fields |= f.filter.names
        return frozenset(fields)

    def document(self) -> dict[str, Any]:
        """The view as JSON-able data, without the optional keys it leaves unset: a view that
        uses none of them reads exactly as it did before they existed (hash, Redis spec)."""
        doc = self.model_dump(mode="json")
        for feature in doc["features"]:
            for key in _UNSET_OMITTED:
                if feature.get(key) is None:
                    feature.pop(key, None)
        if not doc["derived"]:
            del doc["derived"]
        return doc

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the view's values (`document()`); the description is left out."""
        doc = self.document()
        del doc["description"]
        return doc

    def content_hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_proto(self) -> features_pb2.FeatureViewSpec:
        kinds = {"tumbling": features_pb2.WINDOW_KIND_TUMBLING, "hopping": features_pb2.WINDOW_KIND_HOPPING}
        return features_pb2.FeatureViewSpec(
            name=self.name,
            version=self.version,
            source_event_type=self.source,
            entity=self.entity,
            features=[
                features_pb2.FeatureSpec(
                    name=f.name,
                    function=features_pb2.AggregationFunction.Value(f"AGGREGATION_FUNCTION_{f.agg.name}"),
                    field=f.field or "",
                    window=features_pb2.Window(
                        kind=kinds[f.window.kind],
                        size=_duration_pb(f.window.size_ms),
                        step=_duration_pb(f.window.step_ms),
                    ),
                    where=f.where or "",
                )
                for f in self.features
            ],
            derived=[features_pb2.DerivedFeatureSpec(name=d.name, expr=d.expr) for d in self.derived],
            allowed_lateness=_duration_pb(self.allowed_lateness_ms),
            ttl=_duration_pb(self.ttl_ms),
            description=self.description,
            content_hash=self.content_hash(),
        )

    @classmethod
    def from_proto(cls, spec: features_pb2.FeatureViewSpec) -> FeatureViewDef:
        def window(w: features_pb2.Window) -> dict[str, Any]:
            kind = "hopping" if w.kind == features_pb2.WINDOW_KIND_HOPPING else "tumbling"
            return {"kind": kind, "size_ms": w.size.ToMilliseconds(), "step_ms": w.step.ToMilliseconds()}

        return cls(
            name=spec.name,
            version=spec.version,
            source=spec.source_event_type,
            entity=spec.entity,
            features=tuple(
                FeatureDef(
                    name=f.name,
                    agg=AggregationFunction[
                        features_pb2.AggregationFunction.Name(f.function).removeprefix("AGGREGATION_FUNCTION_")
                    ],
                    field=f.field or None,
                    window=WindowDef.model_validate(window(f.window)),
                    where=f.where or None,
                )
                for f in spec.features
            ),
            derived=tuple(DerivedDef(name=d.name, expr=d.expr) for d in spec.derived),
            allowed_lateness_ms=spec.allowed_lateness.ToMilliseconds(),
            ttl_ms=spec.ttl.ToMilliseconds(),
            description=spec.description,
        )


class LabelDef(_Strict):
    """A model target: the `field` value of events of `event_type`, keyed by `entity`."""

    name: str
    event_type: str
    entity: str
    field: str

    def to_proto(self) -> features_pb2.LabelSpec:
        return features_pb2.LabelSpec(name=self.name, event_type=self.event_type, entity=self.entity, field=self.field)


class ModelDef(_Strict):
    """What `fti train --model NAME` trains: a label, the views feeding it, LightGBM params.

    `metric` (early stopping, and the promoter's default comparison) must fit the task:
    auc or logloss for binary, rmse or mae for regression; it defaults to the task's first.
    """

    name: str
    task: Task = Task.BINARY
    label: str
    views: tuple[str, ...]  # "view:version" refs, all features of each in definition order
    metric: Metric
    params: dict[str, float | int | str] = {}
    num_boost_round: int = 500
    early_stopping_rounds: int = 30
    validation_fraction: float = 0.2
    # Categories kept per string feature (most frequent first); the rest share one "other" code.
    max_categories: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _default_metric(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("metric") is None:
            task = data.get("task", Task.BINARY)
            # An unknown task is reported by its field's validation; any metric will do meanwhile.
            metric = Task(task).primary_metric if isinstance(task, str) and task in set(Task) else Metric.AUC
            data = {**data, "metric": metric}
        return data

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelDef:
        if self.metric not in self.task.metrics:
            fits = " or ".join(self.task.metrics)
            raise ValueError(f"metric {self.metric.value!r} does not fit a {self.task.value} model; use {fits}")
        return self


# What a field must hold for each aggregation that reads it (when its event type declares nothing).
_IMPLIED_TYPE = {
    AggregationFunction.SUM: FieldType.FLOAT,
    AggregationFunction.MEAN: FieldType.FLOAT,
    AggregationFunction.MIN: FieldType.FLOAT,
    AggregationFunction.MAX: FieldType.FLOAT,
    AggregationFunction.LAST: FieldType.FLOAT,
    AggregationFunction.DISTINCT_COUNT: FieldType.ANY,
    AggregationFunction.LAST_STRING: FieldType.STRING,
    AggregationFunction.MOST_FREQUENT: FieldType.STRING,
}


class Definitions(_Strict):
    views: tuple[FeatureViewDef, ...]
    labels: tuple[LabelDef, ...] = ()
    models: tuple[ModelDef, ...] = ()
    events: tuple[EventTypeDef, ...] = ()
    sources: tuple[SourceDef, ...] = ()

    def value_rules(self) -> dict[str, dict[str, FieldRule]]:
        """Per event type, the rule of each field something reads or the file declares.

        Implied by the views (a numeric aggregate needs a number), replaced by a declaration,
        and a label's field always gets its models' domain (a binary label is 0 or 1)."""
        rules: dict[str, dict[str, FieldRule]] = {}
        for view in self.views:
            for f in view.features:
                if f.field and f.agg in _IMPLIED_TYPE:
                    mine = rules.setdefault(view.source, {})
                    if mine.get(f.field, FieldRule(FieldType.ANY)).type is FieldType.ANY:
                        mine[f.field] = FieldRule(_IMPLIED_TYPE[f.agg])
        for ev in self.events:
            rules.setdefault(ev.name, {}).update({name: FieldRule.of(decl) for name, decl in ev.fields.items()})
        for lbl in self.labels:
            tasks = [m.task for m in self.models if m.label == lbl.name]
            rules.setdefault(lbl.event_type, {})[lbl.field] = label_rule(tasks)
        return rules

    def view(self, name: str, version: int | None = None) -> FeatureViewDef:
        matches = [v for v in self.views if v.name == name and (version is None or v.version == version)]
        if not matches:
            raise DefinitionError(f"no feature view {name}{'' if version is None else f':{version}'}")
        return max(matches, key=lambda v: v.version)

    def views_for_event(self, event_type: str) -> list[FeatureViewDef]:
        return [v for v in self.views if v.source == event_type]

    @property
    def event_types(self) -> set[str]:
        return {v.source for v in self.views} | {lbl.event_type for lbl in self.labels} | self.sourced_event_types

    @property
    def sourced_event_types(self) -> set[str]:
        """Event types a source produces; every other one comes from the raw topic."""
        return {s.event_type for s in self.sources}

    def source_topics(self) -> dict[str, SourceDef]:
        """Topic -> the source reading it."""
        return {t: s for s in self.sources for t in s.topics}

    def label(self, name: str) -> LabelDef:
        for lbl in self.labels:
            if lbl.name == name:
                return lbl
        raise DefinitionError(f"no label {name!r}")

    def model(self, name: str) -> ModelDef:
        for m in self.models:
            if m.name == name:
                return m
        raise DefinitionError(f"no model {name!r} in the definitions")

    def model_views(self, name: str) -> list[FeatureViewDef]:
        out = []
        for ref in self.model(name).views:
            view, _, version = ref.partition(":")
            out.append(self.view(view, int(version) if version else None))
        return out


def _implied_clash(wants: FieldType, has: FieldType) -> bool:
    """Whether a field of type `has` cannot feed an aggregation that reads a `wants` field."""
    if wants is FieldType.ANY or has is FieldType.ANY:
        return False
    if wants is FieldType.STRING:
        return has is not FieldType.STRING
    return has is FieldType.STRING  # a numeric aggregate reads float, int or bool fields


def _check_field_types(defs: Definitions) -> None:
    """Refuse a field that one feature reads as a number and another (or its declaration) as text."""
    declared = {ev.name: {n: d.type for n, d in ev.fields.items()} for ev in defs.events}
    readers: dict[tuple[str, str], tuple[str, FieldType]] = {}
    for view in defs.views:
        for f in view.features:
            wants = _IMPLIED_TYPE.get(f.agg, FieldType.ANY)
            if not f.field or wants is FieldType.ANY:
                continue
            where = f"view {view.ref}: feature {f.name!r}"
            has = declared.get(view.source, {}).get(f.field)
            if has is not None and _implied_clash(wants, has):
                hint = "; use last_string or most_frequent" if has is FieldType.STRING else ""
                raise DefinitionError(
                    f"{where}: {f.agg.value} reads a {wants.value} field, but {view.source}.{f.field} "
                    f"is declared {has.value}{hint}"
                )
            first = readers.setdefault((view.source, f.field), (where, wants))
            if _implied_clash(wants, first[1]):
                raise DefinitionError(
                    f"{where}: {f.agg.value} reads {view.source}.{f.field} as {wants.value}, but {first[0]} "
                    f"reads it as {first[1].value}; a field holds one type"
                )


def _entry_name(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and "name" in raw:
        return f"{raw['name']}:{raw['version']}" if "version" in raw else str(raw["name"])
    return f"#{index + 1}"


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """`features.0.window: bad duration` for a field, `bad duration` for the entry as a whole."""
    msg = msg.removeprefix("Value error, ")
    where = ".".join(str(p) for p in loc)
    return f"{where}: {msg}" if where else msg


def _validate_section(kind: str, items: Iterable[Any], model: type[BaseModel]) -> list[Any]:
    out = []
    for i, raw in enumerate(items):
        try:
            out.append(model.model_validate(raw))
        except ValidationError as exc:
            problems = "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors())
            raise DefinitionError(f"{kind} {_entry_name(raw, i)}: {problems}") from exc
    return out


def parse_definitions(doc: Any, base_dir: Path | None = None) -> Definitions:
    """Validate a definitions document; `base_dir` resolves the relative paths it names
    (a protobuf source's descriptor set), the current folder when None."""
    if not isinstance(doc, dict):
        raise DefinitionError("a definitions file is a mapping with views, labels and models")
    unknown = set(doc) - {"views", "labels", "models", "events", "sources"}
    if unknown:
        raise DefinitionError(f"unknown top-level fields {sorted(unknown)}")
    views = _validate_section("view", doc.get("views") or [], FeatureViewDef)
    labels = _validate_section("label", doc.get("labels") or [], LabelDef)
    models = _validate_section("model", doc.get("models") or [], ModelDef)
    events = _validate_section("event", doc.get("events") or [], EventTypeDef)
    sources = _resolve_sources(_validate_section("source", doc.get("sources") or [], SourceDef), base_dir)
    seen: set[str] = set()
    for v in views:
        if v.ref in seen:
            raise DefinitionError(f"view {v.ref}: defined twice")
        seen.add(v.ref)
    for kind, names in (
        ("label", [x.name for x in labels]),
        ("model", [x.name for x in models]),
        ("event", [x.name for x in events]),
        ("source", [x.name for x in sources]),
    ):
        for n in names:
            if names.count(n) > 1:
                raise DefinitionError(f"{kind} {n}: defined twice")
    defs = Definitions(
        views=tuple(views), labels=tuple(labels), models=tuple(models), events=tuple(events), sources=tuple(sources)
    )
    _check_field_types(defs)
    try:
        check_sources(defs)
    except ValueError as exc:
        raise DefinitionError(str(exc)) from exc
    for m in models:
        defs.label(m.label)
        try:
            defs.model_views(m.name)
        except (DefinitionError, ValueError) as exc:
            raise DefinitionError(f"model {m.name}: {exc}") from exc
    return defs


def _resolve_sources(sources: list[SourceDef], base_dir: Path | None) -> list[SourceDef]:
    out = []
    for src in sources:
        try:
            out.append(src.resolved(base_dir or Path.cwd()))
        except ValueError as exc:
            raise DefinitionError(f"source {src.name}: {exc}") from exc
    return out


def load_definitions(path: Path) -> Definitions:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise DefinitionError(f"definitions file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise DefinitionError(f"definitions file {path} is not valid YAML: {exc}") from exc
    return parse_definitions(doc, path.parent)
