"""A loaded model version: a LightGBM booster plus the layout its features are assembled in.

Artefacts are LightGBM's own text format, parsed with `lgb.Booster(model_str=...)` only
after the model source verified their SHA-256. Nothing here unpickles anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import lightgbm as lgb
import numpy as np

from fti.v1 import inference_pb2
from fti_core.errors import IntegrityError, InvalidArgumentError

from .features import Catalogue, FeatureLike, FeatureUse, ModelLayout, layout_for

__all__ = ["LoadedModel", "ModelSource", "VersionRecord", "load_model"]


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


class ModelSource(Protocol):
    """The part of `registry.models.ModelRegistry` the server uses (blocking calls)."""

    def resolve(self, model: str, alias: str) -> VersionRecord | None: ...
    def latest(self, model: str) -> VersionRecord | None: ...
    def load_artefact(self, model: str, version: int) -> bytes:
        """The artefact bytes, SHA-256 verified; raises IntegrityError on a mismatch."""
        ...


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """Immutable once built, so a request holding a reference is never disturbed by a swap."""

    name: str
    version: int
    sha256: str
    layout: ModelLayout
    booster: lgb.Booster
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
        scores = self.booster.predict(matrix, num_threads=1)
        result: list[float] = np.asarray(scores, dtype=np.float64).reshape(len(rows)).tolist()
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
        return response


def load_model(source: ModelSource, record: VersionRecord, catalogue: Catalogue | None = None) -> LoadedModel:
    """Load aside, check and warm up one version. Blocking: run it off the event loop."""
    artefact = source.load_artefact(record.model, record.version)
    try:
        booster = lgb.Booster(model_str=artefact.decode("utf-8"))
    except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
        raise IntegrityError(f"{record.model} v{record.version}: not a LightGBM text model ({exc})") from exc
    layout = layout_for(record.features, record.entities, catalogue)
    if booster.num_feature() != len(layout.features):
        raise InvalidArgumentError(
            f"{record.model} v{record.version}: booster has {booster.num_feature()} features, "
            f"the version record lists {len(layout.features)}"
        )
    model = LoadedModel(record.model, int(record.version), record.sha256, layout, booster)
    # Warm-up: the first predict pays one-off allocation costs; pay them before the swap, not
    # on a caller's request, and prove the model scores at all.
    warm = model.predict([[math.nan] * len(layout.features)])
    if not all(math.isfinite(s) for s in warm):
        raise InvalidArgumentError(f"{record.model} v{record.version}: warm-up prediction is not finite")
    return model
