"""Model flavors: the LightGBM Predictor scores like Booster.predict; bad bytes and unknown flavors are refused."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from fti_core.errors import IntegrityError, InvalidArgumentError
from registry.flavors import LIGHTGBM, LightGBMPredictor, UnknownFlavorError, flavor_names, load_predictor
from registry.models import FeatureRef, ModelRegistry, safe_key

FEATURES = (FeatureRef("v", 1, "a", "e"), FeatureRef("v", 1, "b", "e"), FeatureRef("w", 1, "c", "k"))


def _model_text(objective: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3))
    signal = x[:, 0] - 0.7 * x[:, 2] + rng.normal(scale=0.3, size=400)
    y = (signal > 0).astype(float) if objective == "binary" else signal * 10.0
    params = {"objective": objective, "verbosity": -1, "num_threads": 1, "seed": seed, "num_leaves": 7}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=["v__a", "v__b", "w__c"]), num_boost_round=12)
    return str(booster.model_to_string()).encode()


def _rows(seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(50, 3))
    rows[::7, 1] = np.nan  # missing values go through as LightGBM's missing
    return rows


@pytest.mark.parametrize("objective", ["binary", "regression"])
def test_the_lightgbm_predictor_equals_booster_predict(objective: str) -> None:
    text = _model_text(objective, seed=3)
    predictor = load_predictor(LIGHTGBM, text, sha256=hashlib.sha256(text).hexdigest())
    rows = _rows(4)
    expected = lgb.Booster(model_str=text.decode()).predict(rows)
    got = predictor.predict(rows)
    assert got.dtype == np.float64 and got.shape == (50,)
    assert got.tolist() == expected.tolist()
    assert isinstance(predictor, LightGBMPredictor) and predictor.flavor == "lightgbm"
    assert predictor.feature_names == ("v__a", "v__b", "w__c") and predictor.num_features == 3


def test_a_predictor_refuses_rows_of_the_wrong_width() -> None:
    text = _model_text("binary", seed=1)
    predictor = load_predictor(LIGHTGBM, text, sha256=hashlib.sha256(text).hexdigest())
    with pytest.raises(InvalidArgumentError, match=r"rows of 3 features, got an array of shape \(2, 2\)"):
        predictor.predict(np.zeros((2, 2)))


def test_bytes_that_do_not_match_their_sha256_are_refused_before_parsing() -> None:
    text = _model_text("binary", seed=1)
    with pytest.raises(IntegrityError, match="model m version 2: SHA-256 mismatch"):
        load_predictor(LIGHTGBM, text, sha256=hashlib.sha256(b"other").hexdigest(), what="model m version 2")


def test_bytes_that_are_not_a_lightgbm_text_model_are_refused() -> None:
    junk = b"\x80\x04not a model"
    with pytest.raises(IntegrityError, match="not a LightGBM text model"):
        load_predictor(LIGHTGBM, junk, sha256=hashlib.sha256(junk).hexdigest())


def test_an_unknown_flavor_is_refused_naming_the_known_ones() -> None:
    assert flavor_names() == ("lightgbm",)
    with pytest.raises(UnknownFlavorError, match="flavor 'onnx', which this process cannot load \\(known: lightgbm\\)"):
        load_predictor("onnx", b"x", sha256=hashlib.sha256(b"x").hexdigest())


def test_the_registry_loads_a_version_by_its_flavor(tmp_path: Path) -> None:
    reg = ModelRegistry.from_uri(str(tmp_path))
    text = _model_text("regression", seed=2)
    common = {"snapshot_id": "s", "code_version": "t", "params": {}, "metrics": {"rmse": 1.0}, "task": "regression"}
    record = reg.publish("m", text, features=FEATURES, **common)  # type: ignore[arg-type]
    rows = _rows(5)
    assert reg.load_predictor("m", record.version).predict(rows).tolist() == (
        lgb.Booster(model_str=text.decode()).predict(rows).tolist()
    )
    # A version whose record names a flavor this process lacks (published elsewhere, by a newer fti).
    foreign = dataclasses.replace(record, version=2, flavor="onnx")
    reg.store.put_exclusive(safe_key("models", "m", "versions", "0000000002.json"), foreign.to_json())
    assert reg.get("m", 2).flavor == "onnx"
    with pytest.raises(UnknownFlavorError, match="model m version 2 has flavor 'onnx'"):
        reg.load_predictor("m", 2)
