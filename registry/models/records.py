"""Registry domain objects. Each owns its Protobuf conversion and its stored JSON form.

Stored JSON is the Protobuf JSON mapping of the contract message plus a few registry-only
fields, so a record written today stays readable by anything that speaks `fti.v1`. Records
written by fti 0.1 lack `flavor` (they are all LightGBM, and read as such) and each feature's
`entity` (read as ""; the inference server then keys views the 0.1 way, deprecated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from fti.v1 import features_pb2, models_pb2
from fti_core.errors import IntegrityError, InvalidArgumentError
from fti_core.tasks import Task
from registry.models.vocabulary import Vocabulary

__all__ = [
    "ALIAS_MOVE_KINDS",
    "LEGACY_FLAVOR",
    "AliasMoveKind",
    "AliasMoveRecord",
    "FeatureRef",
    "LabelRef",
    "ModelVersionRecord",
    "PromotionDecisionRecord",
]

_TASK_PROTO: dict[Task, int] = {
    Task.BINARY: models_pb2.MODEL_TASK_BINARY,
    Task.REGRESSION: models_pb2.MODEL_TASK_REGRESSION,
}
_PROTO_TASK: dict[int, Task] = {v: k for k, v in _TASK_PROTO.items()}
# The flavor of a record that names none: fti 0.1 published LightGBM text models only.
LEGACY_FLAVOR = "lightgbm"
AliasMoveKind = Literal["set", "promoted", "rolled_back"]
ALIAS_MOVE_KINDS: dict[str, int] = {
    "set": models_pb2.ALIAS_MOVE_KIND_SET,
    "promoted": models_pb2.ALIAS_MOVE_KIND_PROMOTED,
    "rolled_back": models_pb2.ALIAS_MOVE_KIND_ROLLED_BACK,
}
_FORMAT = 1


def _to_json(msg: Any, **extra: Any) -> bytes:
    body = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return json.dumps({"format": _FORMAT, "record": body, **extra}, sort_keys=True, indent=1).encode()


def _from_json(data: bytes, msg: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    if doc.get("format") != _FORMAT:
        raise InvalidArgumentError(f"unknown registry record format {doc.get('format')!r}")
    json_format.ParseDict(doc["record"], msg)
    return doc


@dataclass(frozen=True)
class FeatureRef:
    """One feature a model needs: its view, the view's version, the feature's name, and the
    entity kind keying the view ("" in records written by fti 0.1)."""

    view: str
    view_version: int
    feature: str
    entity: str = ""

    @property
    def column(self) -> str:
        """The column name the trainer and server use for this feature."""
        return f"{self.view}__{self.feature}"

    @property
    def key(self) -> tuple[str, int, str]:
        """What identifies the feature; the entity follows from the view version."""
        return (self.view, self.view_version, self.feature)

    def to_proto(self) -> features_pb2.FeatureRef:
        return features_pb2.FeatureRef(
            view=self.view, view_version=self.view_version, feature=self.feature, entity=self.entity
        )

    @classmethod
    def from_proto(cls, msg: features_pb2.FeatureRef) -> FeatureRef:
        return cls(view=msg.view, view_version=msg.view_version, feature=msg.feature, entity=msg.entity)


@dataclass(frozen=True)
class LabelRef:
    """The target a model was trained on: the `field` of events of `event_type`, keyed by `entity`."""

    name: str
    event_type: str
    entity: str
    field: str

    def to_proto(self) -> features_pb2.LabelSpec:
        return features_pb2.LabelSpec(name=self.name, event_type=self.event_type, entity=self.entity, field=self.field)

    @classmethod
    def from_proto(cls, msg: features_pb2.LabelSpec) -> LabelRef:
        return cls(name=msg.name, event_type=msg.event_type, entity=msg.entity, field=msg.field)


@dataclass(frozen=True)
class ModelVersionRecord:
    """An immutable model version and its lineage."""

    model: str
    version: int
    sha256: str
    artefact_uri: str
    features: tuple[FeatureRef, ...]
    entities: tuple[str, ...]
    snapshot_id: str
    code_version: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    created_at_ms: int
    task: Task
    label: LabelRef | None = None
    flavor: str = LEGACY_FLAVOR
    # Registry-only: the held-out rows the trainer validated on (parquet), so a promoter can
    # score this version and the alias holder on the same data.
    holdout_uri: str = ""
    holdout_sha256: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    # One per string feature, fed to the model as a categorical (empty for numeric-only models).
    vocabularies: tuple[Vocabulary, ...] = ()

    def __post_init__(self) -> None:
        # Accept the task's name too ("binary"); anything else is refused here, not downstream.
        object.__setattr__(self, "task", Task.parse(str(self.task)))

    @property
    def feature_columns(self) -> list[str]:
        return [f.column for f in self.features]

    @property
    def vocabulary_of(self) -> dict[str, Vocabulary]:
        """Vocabularies by feature column."""
        return {v.column: v for v in self.vocabularies}

    def to_proto(self) -> models_pb2.ModelVersion:
        created = Timestamp()
        created.FromMilliseconds(self.created_at_ms)
        msg = models_pb2.ModelVersion(
            model=self.model,
            version=self.version,
            sha256=self.sha256,
            artefact_uri=self.artefact_uri,
            features=[f.to_proto() for f in self.features],
            snapshot_id=self.snapshot_id,
            code_version=self.code_version,
            params=dict(self.params),
            metrics=dict(self.metrics),
            created_at=created,
            task=_TASK_PROTO[self.task],  # type: ignore[arg-type]
            entities=list(self.entities),
            flavor=self.flavor,
            vocabularies=[v.to_proto() for v in self.vocabularies],
        )
        if self.label is not None:
            msg.label.CopyFrom(self.label.to_proto())
        return msg

    @classmethod
    def from_proto(cls, msg: models_pb2.ModelVersion, **extra: Any) -> ModelVersionRecord:
        label = LabelRef.from_proto(msg.label) if msg.HasField("label") else None
        task = _PROTO_TASK.get(msg.task)
        if task is None:
            raise IntegrityError(
                f"model {msg.model} version {msg.version}: the record names no known task ({msg.task})"
            )
        return cls(
            model=msg.model,
            version=msg.version,
            sha256=msg.sha256,
            artefact_uri=msg.artefact_uri,
            features=tuple(FeatureRef.from_proto(f) for f in msg.features),
            entities=tuple(msg.entities),
            snapshot_id=msg.snapshot_id,
            code_version=msg.code_version,
            params=dict(msg.params),
            metrics=dict(msg.metrics),
            created_at_ms=msg.created_at.ToMilliseconds(),
            task=task,
            label=label,
            flavor=msg.flavor or LEGACY_FLAVOR,
            vocabularies=tuple(Vocabulary.from_proto(v) for v in msg.vocabularies),
            **extra,
        )

    def to_json(self) -> bytes:
        holdout = {"uri": self.holdout_uri, "sha256": self.holdout_sha256}
        return _to_json(self.to_proto(), holdout=holdout, extra=dict(self.extra))

    @classmethod
    def from_json(cls, data: bytes) -> ModelVersionRecord:
        msg = models_pb2.ModelVersion()
        doc = _from_json(data, msg)
        holdout = doc.get("holdout") or {}
        return cls.from_proto(
            msg,
            holdout_uri=str(holdout.get("uri", "")),
            holdout_sha256=str(holdout.get("sha256", "")),
            extra={str(k): str(v) for k, v in (doc.get("extra") or {}).items()},
        )


@dataclass(frozen=True)
class AliasMoveRecord:
    """One entry of an alias's history. `from_version` is None when the alias had no holder."""

    model: str
    alias: str
    from_version: int | None
    to_version: int
    kind: str
    actor: str
    reason: str
    evidence: Mapping[str, float]
    sequence: int
    at_ms: int

    def to_proto(self) -> models_pb2.AliasMoved:
        return models_pb2.AliasMoved(
            model=self.model,
            alias=self.alias,
            from_version=self.from_version or 0,
            to_version=self.to_version,
            kind=ALIAS_MOVE_KINDS.get(self.kind, models_pb2.ALIAS_MOVE_KIND_UNSPECIFIED),  # type: ignore[arg-type]
            actor=self.actor,
            reason=self.reason,
            evidence=dict(self.evidence),
            sequence=self.sequence,
        )

    @classmethod
    def from_proto(cls, msg: models_pb2.AliasMoved, *, at_ms: int = 0) -> AliasMoveRecord:
        kinds = {v: k for k, v in ALIAS_MOVE_KINDS.items()}
        return cls(
            model=msg.model,
            alias=msg.alias,
            from_version=msg.from_version or None,
            to_version=msg.to_version,
            kind=kinds.get(msg.kind, "unspecified"),
            actor=msg.actor,
            reason=msg.reason,
            evidence=dict(msg.evidence),
            sequence=msg.sequence,
            at_ms=at_ms,
        )

    def to_json(self) -> bytes:
        return _to_json(self.to_proto(), at_ms=self.at_ms)

    @classmethod
    def from_json(cls, data: bytes) -> AliasMoveRecord:
        msg = models_pb2.AliasMoved()
        doc = _from_json(data, msg)
        return cls.from_proto(msg, at_ms=int(doc.get("at_ms", 0)))


@dataclass(frozen=True)
class PromotionDecisionRecord:
    """A promoter's verdict on one candidate for one alias, with the figures behind it."""

    model: str
    alias: str
    candidate_version: int
    current_version: int | None
    promoted: bool
    reason: str
    evidence: Mapping[str, float]
    actor: str
    at_ms: int

    def to_proto(self) -> models_pb2.PromotionDeclined:
        return models_pb2.PromotionDeclined(
            model=self.model,
            alias=self.alias,
            candidate_version=self.candidate_version,
            current_version=self.current_version or 0,
            reason=self.reason,
            evidence=dict(self.evidence),
        )

    def to_json(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "model": self.model,
            "alias": self.alias,
            "candidate_version": self.candidate_version,
            "current_version": self.current_version,
            "promoted": self.promoted,
            "reason": self.reason,
            "evidence": dict(self.evidence),
            "actor": self.actor,
            "at_ms": self.at_ms,
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PromotionDecisionRecord:
        doc = json.loads(data)
        if doc.get("format") != _FORMAT:
            raise InvalidArgumentError(f"unknown registry record format {doc.get('format')!r}")
        current = doc.get("current_version")
        return cls(
            model=str(doc["model"]),
            alias=str(doc["alias"]),
            candidate_version=int(doc["candidate_version"]),
            current_version=None if current is None else int(current),
            promoted=bool(doc["promoted"]),
            reason=str(doc["reason"]),
            evidence={str(k): float(v) for k, v in doc["evidence"].items()},
            actor=str(doc["actor"]),
            at_ms=int(doc["at_ms"]),
        )
