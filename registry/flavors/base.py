"""The one interface every model flavor implements, and the flavors this process can load, by name.

A model version records its flavor (`ModelVersion.flavor`). Everything that scores a version
(the trainer's evaluation, the promoter, the inference server) loads it through
`load_predictor(flavor, artefact, sha256=...)`: the bytes are checked against their SHA-256
first, and only then handed to the flavor's parser. A flavor this process does not know is an
`UnknownFlavorError`, never a guess.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fti_core.errors import IntegrityError, InvalidArgumentError

__all__ = [
    "Flavor",
    "FloatMatrix",
    "FloatVector",
    "Predictor",
    "UnknownFlavorError",
    "flavor_names",
    "get_flavor",
    "load_predictor",
    "register_flavor",
]

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]


class UnknownFlavorError(InvalidArgumentError):
    """A model version names a flavor this process has no loader for."""


class Predictor(ABC):
    """A loaded model: scores rows of floats given in the model's feature order."""

    flavor: ClassVar[str]

    @property
    @abstractmethod
    def feature_names(self) -> tuple[str, ...]:
        """The model's own names of its inputs, in feature order."""

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def predict(self, x: FloatMatrix) -> FloatVector:
        """One score per row of `x` (rows x features, NaN = missing), as float64."""
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise InvalidArgumentError(
                f"{self.flavor} model takes rows of {self.num_features} features, got an array of shape {x.shape}"
            )
        scores = np.asarray(self._predict(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        return scores.reshape(x.shape[0])

    @abstractmethod
    def _predict(self, x: FloatMatrix) -> FloatVector: ...


class Flavor(ABC):
    """Turns verified artefact bytes into a Predictor. Never unpickles anything."""

    name: ClassVar[str]

    @abstractmethod
    def parse(self, artefact: bytes, *, num_threads: int = 0, what: str = "artefact") -> Predictor:
        """A predictor from bytes already checked; IntegrityError when they are not this flavor's format.

        `num_threads` caps the threads one predict call uses (0: the library's default).
        """


_FLAVORS: dict[str, Flavor] = {}


def register_flavor(flavor: Flavor) -> None:
    """Make `flavor` loadable by its name in this process (a second one of the same name is refused)."""
    existing = _FLAVORS.get(flavor.name)
    if existing is not None and type(existing) is not type(flavor):
        raise InvalidArgumentError(f"flavor {flavor.name!r} is already registered by {type(existing).__name__}")
    _FLAVORS[flavor.name] = flavor


def flavor_names() -> tuple[str, ...]:
    return tuple(sorted(_FLAVORS))


def get_flavor(name: str, *, what: str = "a model version") -> Flavor:
    flavor = _FLAVORS.get(name)
    if flavor is None:
        known = ", ".join(flavor_names()) or "none"
        raise UnknownFlavorError(f"{what} has flavor {name!r}, which this process cannot load (known: {known})")
    return flavor


def load_predictor(
    flavor: str, artefact: bytes, *, sha256: str, num_threads: int = 0, what: str = "artefact"
) -> Predictor:
    """Check `artefact` against `sha256`, then parse it with the named flavor."""
    loader = get_flavor(flavor, what=what)
    actual = hashlib.sha256(artefact).hexdigest()
    if actual != sha256:
        raise IntegrityError(f"{what}: SHA-256 mismatch (recorded {sha256}, stored bytes {actual}); refused")
    return loader.parse(artefact, num_threads=num_threads, what=what)
