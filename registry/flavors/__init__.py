"""Model flavors: how a version's artefact is loaded and scored, by the name its record gives.

`lightgbm` (LightGBM's text format) is the one flavor shipped and is registered on import.
"""

from registry.flavors.base import (
    Flavor,
    FloatMatrix,
    FloatVector,
    Predictor,
    UnknownFlavorError,
    flavor_names,
    get_flavor,
    load_predictor,
    register_flavor,
)
from registry.flavors.lightgbm import LIGHTGBM, LightGBMFlavor, LightGBMPredictor

register_flavor(LightGBMFlavor())

__all__ = [
    "LIGHTGBM",
    "Flavor",
    "FloatMatrix",
    "FloatVector",
    "LightGBMFlavor",
    "LightGBMPredictor",
    "Predictor",
    "UnknownFlavorError",
    "flavor_names",
    "get_flavor",
    "load_predictor",
    "register_flavor",
]
