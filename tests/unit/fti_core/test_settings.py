"""Settings come from FTI_ variables and a TOML file, and never show their secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fti_core.settings import FtiSettings, load_settings


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about defaults and precedence: the caller's FTI_ variables must not leak in."""
    import os

    for key in list(os.environ):
        if key.startswith("FTI_"):
            monkeypatch.delenv(key)


def test_environment_overrides_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fti.toml"
    cfg.write_text('[fti]\nkafka_bootstrap_servers = "file:9092"\nevents_topic = "from.file"\n')
    monkeypatch.setenv("FTI_CONFIG", str(cfg))
    monkeypatch.setenv("FTI_KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    s = FtiSettings()
    assert s.kafka_bootstrap_servers == "env:9092"
    assert s.events_topic == "from.file"


def test_secrets_are_masked_in_str_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings(redis_url="redis://:hunter2@cache:6379/0", kafka_sasl_password="s3cret")
    logging.getLogger("t").warning("settings: %s %r", s, s)
    for text in (str(s), repr(s), caplog.text, str(s.model_dump())):
        assert "hunter2" not in text and "s3cret" not in text
    assert s.confluent_config()["sasl.password"] == "s3cret"


def test_sasl_and_tls_options_reach_both_kafka_clients() -> None:
    s = FtiSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="u",
        kafka_sasl_password="p",  # type: ignore[arg-type]
    )
    assert s.confluent_config() == {
        "bootstrap.servers": "localhost:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "u",
        "sasl.password": "p",
    }
    conf = s.aiokafka_config()
    assert conf["sasl_mechanism"] == "SCRAM-SHA-256" and conf["sasl_plain_password"] == "p"
    assert "ssl_context" not in conf


def test_settings_are_frozen() -> None:
    s = FtiSettings()
    with pytest.raises(Exception, match="frozen"):
        s.events_topic = "other"  # type: ignore[misc]


def test_store_locations_default_under_the_data_dir(tmp_path: Path) -> None:
    s = FtiSettings(data_dir=tmp_path)
    assert s.offline_root == str(tmp_path / "offline")
    assert s.registry_root == str(tmp_path / "registry")
    assert FtiSettings(registry_uri="s3://bucket/models").registry_root == "s3://bucket/models"
