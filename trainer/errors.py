"""Typed errors of the training pipeline."""

from __future__ import annotations

from fti_core.errors import InvalidArgumentError

__all__ = ["TrainingDataError"]


class TrainingDataError(InvalidArgumentError):
    """The snapshot cannot yield a usable training set (no labels, no features, one class...)."""
