"""The worker (writer) and the server (reader) read the online-store key prefix from one setting."""

from __future__ import annotations

import os

import pytest

from feature_stream.settings import FeatureStreamSettings
from inference_grpc.settings import InferenceSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FTI_"):
            monkeypatch.delenv(key)


def test_one_shared_setting_reaches_writer_and_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FeatureStreamSettings().redis_prefix == InferenceSettings().redis_prefix == "fti"
    monkeypatch.setenv("FTI_REDIS_PREFIX", "shop-a")
    assert FeatureStreamSettings().redis_prefix == InferenceSettings().redis_prefix == "shop-a"
    assert FeatureStreamSettings().state_key_prefix == "shop-a:state:fti-features"


def test_the_old_worker_override_still_reaches_only_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_ONLINE_STORE_PREFIX", "shared")
    monkeypatch.setenv("FTI_FEATURES_REDIS_PREFIX", "worker-only")
    assert FeatureStreamSettings().redis_prefix == "worker-only"
    assert InferenceSettings().redis_prefix == "shared"
    monkeypatch.setenv("FTI_REDIS_PREFIX", "new")  # the new name wins over both old ones
    assert FeatureStreamSettings().redis_prefix == InferenceSettings().redis_prefix == "new"
