"""Settings every FTI process shares: where Kafka, Redis, the offline store and the registry are.

Values come from `FTI_`-prefixed environment variables and, when `FTI_CONFIG` (or the
`--config` option of `fti`) names a TOML file, from that file; the environment wins. Each
pipeline's own settings class extends `FtiSettings`. Secrets are `SecretStr`, so printing
or logging a settings object masks them.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["CONFIG_ENV", "FtiSettings", "load_settings"]

CONFIG_ENV = "FTI_CONFIG"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the `[fti]` table (or the top level) of the TOML file named by FTI_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
            table = raw.get("fti", raw)
            self._data = {str(k).lower(): v for k, v in table.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class FtiSettings(BaseSettings):
    """Connection settings and store locations common to all pipelines."""

    model_config = SettingsConfigDict(env_prefix="FTI_", frozen=True, extra="ignore")

    data_dir: Path = Field(Path(".fti"), description="Root for local state (stores, registry, stack).")

    kafka_bootstrap_servers: str = Field("localhost:9092", description="Kafka brokers, comma-separated host:port.")
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = Field(None, description="SASL user.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (masked when printed).")
    kafka_ssl_cafile: Path | None = Field(None, description="PEM CA bundle to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM client key (mutual TLS).")

    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"),
        description="Online store; default redis://localhost:6379/0, may hold a password (masked).",
    )

    online_store_prefix: str = Field(
        "fti", description="Key prefix of the online store in Redis, shared by the worker, backfill and server."
    )
    offline_store_uri: str | None = Field(None, description="Local path or fsspec URI; default <data_dir>/offline.")
    registry_uri: str | None = Field(None, description="Local path or fsspec URI; default <data_dir>/registry.")
    definitions_path: Path = Field(Path("examples/fraud/features.yaml"), description="Your feature definitions (YAML).")

    events_topic: str = Field("fti.events", description="Raw events and labels (fti.v1.Event).")
    dlq_topic: str = Field("fti.events.dlq", description="Dead letters: original bytes + reason header.")
    models_topic: str = Field("fti.models", description="Model lifecycle events (fti.v1.ModelEvent).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get(CONFIG_ENV)
        toml = _TomlFileSource(settings_cls, Path(config) if config else None)
        return init_settings, env_settings, toml

    @property
    def offline_root(self) -> str:
        return self.offline_store_uri or str(self.data_dir / "offline")

    @property
    def registry_root(self) -> str:
        return self.registry_uri or str(self.data_dir / "registry")

    def confluent_config(self) -> dict[str, str]:
        """librdkafka properties for confluent-kafka producers, consumers and admin clients."""
        conf = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            conf["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
        if self.kafka_ssl_keyfile:
            conf["ssl.key.location"] = str(self.kafka_ssl_keyfile)
        return conf

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context for asyncio clients (aiokafka, Faust) when TLS is configured."""
        if "SSL" not in self.kafka_security_protocol:
            return None
        ctx = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)
        if self.kafka_ssl_certfile:
            keyfile = str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None
            ctx.load_cert_chain(str(self.kafka_ssl_certfile), keyfile)
        return ctx

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        conf: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl_mechanism"] = self.kafka_sasl_mechanism
            conf["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password:
                conf["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        ctx = self.ssl_context()
        if ctx is not None:
            conf["ssl_context"] = ctx
        return conf


_S = TypeVar("_S", bound=FtiSettings)


def load_settings(cls: type[_S] = FtiSettings, config_file: Path | None = None, **overrides: Any) -> _S:  # type: ignore[assignment]
    """Build a frozen settings object; `config_file` takes the place of FTI_CONFIG."""
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file)
    return cls(**overrides)
