"""Is a version loadable? Checked before an alias is moved to it, so an alias never points at
a version that a new or restarted server would refuse (and sit NOT_SERVING on).

The version is loaded by its flavor first (`ModelRegistry.load_predictor`: SHA-256, then the
flavor's own parser; an unknown flavor or unparsable bytes are refused there). Here the
loaded model must agree with its record and score a row, as a server's warm-up would.
"""

from __future__ import annotations

import math

import numpy as np

from fti_core.errors import InvalidArgumentError
from registry.flavors import Predictor
from registry.models.records import ModelVersionRecord

__all__ = ["verify_loadable"]


def verify_loadable(record: ModelVersionRecord, predictor: Predictor) -> None:
    """Raise InvalidArgumentError when the loaded model disagrees with its record or cannot score."""
    what = f"model {record.model} version {record.version}"
    expected = len(record.features)
    if predictor.num_features != expected:
        raise InvalidArgumentError(
            f"{what}: the model takes {predictor.num_features} features, its record lists {expected}"
        )
    # What a server does before it serves a version: one prediction, which must be a number.
    scores = predictor.predict(np.full((1, expected), math.nan))
    if not np.isfinite(scores).all():
        raise InvalidArgumentError(f"{what}: a prediction on an all-missing row is not finite")
