"""A loaded model version: a flavor's Predictor plus the layout its features are assembled in.

The registry loads the artefact by the flavor its record names (`registry.flavors`; the
LightGBM flavor parses LightGBM's own text format), after checking its SHA-256. A flavor
this server does not know is refused like a bad artefact. Nothing here unpickles anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fti.v1 import inference_pb2
from fti_core.errors import InvalidArgumentError
from registry.flavors import Predictor

from .features import Codebook, FeatureLike, FeatureUse, ModelLayout, is_legacy_layout, layout_for

__all__ = ["LoadedModel", "ModelSource", "VersionRecord", "load_model"]

log = logging.getLogger(__name__)


class VersionRecord(Protocol):
    """What the inference server needs of a registry `ModelVersionRecord`."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def features(self) -> Sequence[FeatureLike]: ...
    @property
    def entities(self) -> Sequence[str]: ...
    @property
    def flavor(self) -> str: ...
    @property
    def vocabulary_of(self) -> Mapping[str, Codebook]:
        """The string features' vocabularies by column."""
        ...


class ModelSource(Protocol):
    """The part of `registry.models.ModelRegistry` the server uses (blocking calls)."""

    def resolve(self, model: str, alias: str) -> VersionRecord | None: ...
    def latest(self, model: str) -> VersionRecord | None: ...
    def load_predictor(self, model: str, version: int, *, num_threads: int = 0) -> Predictor:
        """The version loaded by its flavor after the SHA-256 check (IntegrityError on a mismatch,
        UnknownFlavorError for a flavor this process cannot load)."""
        ...


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """Immutable once built, so a request holding a reference is never disturbed by a swap."""

    name: str
    version: int
    sha256: str
    layout: ModelLayout
    predictor: Predictor
    # What every response of this version shares; copied, never handed out or changed.
    _template: inference_pb2.PredictResponse = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        views = self.layout.views
        template = inference_pb2.PredictResponse(
            model=self.name,
            model_version=self.version,
            views=[inference_pb2.ViewVersion(view=v.view, version=v.version) for v in views],
            features=[
                inference_pb2.FeatureUsed(name=name, view=views[vi].view, view_version=views[vi].version)
                for vi, name in self.layout.features
            ],
        )
        object.__setattr__(self, "_template", template)

    def predict(self, rows: Sequence[Sequence[float]]) -> list[float]:
        matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(self.layout.features))
        result: list[float] = self.predictor.predict(matrix).tolist()
        return result

    def response(self, used: Sequence[FeatureUse], score: float) -> inference_pb2.PredictResponse:
        """The answer for one request; `used` is in the model's feature order."""
        # Copying a prebuilt message in C and setting three fields per feature is about four
        # times cheaper than building every FeatureUsed from keyword arguments.
        response = inference_pb2.PredictResponse()
        response.CopyFrom(self._template)
        response.score = score
        for out, use in zip(response.features, used, strict=True):
            out.status = use.status  # type: ignore[assignment]
            out.age_ms = use.age_ms
            out.value = use.value
            if use.text:
                out.string_value = use.text
        return response


def load_model(source: ModelSource, record: VersionRecord) -> LoadedModel:
    """Load aside, check and warm up one version. Blocking: run it off the event loop."""
    layout = layout_for(record.features, record.entities, record.vocabulary_of)
    if is_legacy_layout(record.features):
        log.warning(
            "%s v%s was published by fti 0.1 and names no entity per feature: views keyed as %s from its "
            "recorded entities; this fallback goes in the next release, retrain and publish it again",
            record.model,
            record.version,
            ", ".join(f"{v.view}:{v.version}={v.entity}" for v in layout.views),
        )
    # One thread per predict: a call scores a handful of rows, and OpenMP's start-up costs more.
    predictor = source.load_predictor(record.model, int(record.version), num_threads=1)
    if predictor.num_features != len(layout.features):
        raise InvalidArgumentError(
            f"{record.model} v{record.version}: the {record.flavor} model takes {predictor.num_features} features, "
            f"the version record lists {len(layout.features)}"
        )
    model = LoadedModel(record.model, int(record.version), record.sha256, layout, predictor)
    # Warm-up: the first predict pays one-off allocation costs; pay them before the swap, not
    # on a caller's request, and prove the model scores at all.
    warm = model.predict([[math.nan] * len(layout.features)])
    if not all(math.isfinite(s) for s in warm):
        raise InvalidArgumentError(f"{record.model} v{record.version}: warm-up prediction is not finite")
    return model
