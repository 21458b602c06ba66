"""The LightGBM flavor: LightGBM's own text model format, parsed with `Booster(model_str=...)`.

Never pickle. lightgbm is imported on first load, so registry commands that score nothing
(list, show, promote by hand) do not pay for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fti_core.errors import IntegrityError

from .base import Flavor, FloatMatrix, FloatVector, Predictor

__all__ = ["LIGHTGBM", "LightGBMFlavor", "LightGBMPredictor"]

LIGHTGBM = "lightgbm"


class LightGBMPredictor(Predictor):
    flavor: ClassVar[str] = LIGHTGBM

    def __init__(self, booster: Any, *, num_threads: int = 0) -> None:
        self.booster = booster
        self._names = tuple(str(n) for n in booster.feature_name())
        # LightGBM reads 0 as "OpenMP's default"; the server asks for 1 (rows are few per call).
        self._kwargs = {"num_threads": num_threads} if num_threads > 0 else {}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._names

    def _predict(self, x: FloatMatrix) -> FloatVector:
        scores: FloatVector = self.booster.predict(x, **self._kwargs)
        return scores


class LightGBMFlavor(Flavor):
    name: ClassVar[str] = LIGHTGBM

    def parse(self, artefact: bytes, *, num_threads: int = 0, what: str = "artefact") -> Predictor:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=artefact.decode("utf-8"))
        except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
            raise IntegrityError(f"{what}: not a LightGBM text model ({exc})") from exc
        return LightGBMPredictor(booster, num_threads=num_threads)
