"""The worker (writer) and the server (reader) agree on the online-store key prefix by default."""

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
    assert FeatureStreamSettings().online_prefix == InferenceSettings().online_prefix == "fti"
    monkeypatch.setenv("FTI_ONLINE_STORE_PREFIX", "shop-a")
    assert FeatureStreamSettings().online_prefix == InferenceSettings().online_prefix == "shop-a"
    assert FeatureStreamSettings().state_prefix.startswith("shop-a:state:")


def test_pipeline_specific_overrides_still_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_ONLINE_STORE_PREFIX", "shared")
    monkeypatch.setenv("FTI_FEATURES_REDIS_PREFIX", "worker-only")
    monkeypatch.setenv("FTI_REDIS_PREFIX", "server-only")
    assert FeatureStreamSettings().online_prefix == "worker-only"
    assert InferenceSettings().online_prefix == "server-only"
