"""Settings every FTI process shares, and how every process reads its own.

Names. A shared setting is `FTI_<NAME>` (`FTI_KAFKA_BOOTSTRAP_SERVERS`, `FTI_REDIS_PREFIX`,
`FTI_EVENTS_TOPIC_PARTITIONS`); a process's own setting is `FTI_<SECTION>_<NAME>`, one section
per process (`FTI_WORKER_APP_ID`, `FTI_SERVE_PORT`). In Python both are flat fields of one
frozen object: `settings.redis_prefix`, `settings.port` on the server's settings.

Sources, strongest first: constructor arguments (CLI options), `FTI_` environment variables,
then a TOML file: the path given to `load_settings`, else `fti --config`, else `FTI_CONFIG`.
In the file a shared setting is a top-level key (`redis_prefix = "shop-a"`) and a process's
own sits in its section's table (`[serve]` / `port = 50051`); an optional `[fti]` table may
wrap everything. Nothing here writes to `os.environ`.

Each process reports, once and on one line, the `FTI_` variables and file keys it does not
know (with a "did you mean"), and one line per deprecated name it applied. A variable of
another process's section (`FTI_SERVE_PORT` read by the worker) is that process's business.
Secrets are `SecretStr`, so printing or logging a settings object masks them.
"""

from __future__ import annotations

import difflib
import logging
import os
import ssl
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fti_core.errors import InvalidArgumentError
from fti_core.settings_renames import RENAMED, Renamed
from fti_core.topics import TopicSpec, TopicTable

__all__ = [
    "CLICK_CONFIG_KEY",
    "CONFIG_ENV",
    "PROCESS_SECTIONS",
    "FtiSettings",
    "SettingsError",
    "file_key",
    "load_settings",
    "quiet_reports",
]

log = logging.getLogger(__name__)

CONFIG_ENV = "FTI_CONFIG"
# Where `fti --config` leaves the path for the subcommand's settings (click's shared `meta`).
CLICK_CONFIG_KEY = "fti.config"
# One section per process: FTI_<SECTION>_<NAME> is that process's own setting.
PROCESS_SECTIONS = ("WORKER", "SERVE", "PREDICT", "TRAIN", "PROMOTER", "STACK")
# FTI_ variables that are not settings: FTI_CONFIG names the file, scripts/ read FTI_VENV, and
# FTI_NATIVE=0 runs the compiled hot path from source (`fti_core.native`).
_NOT_SETTINGS = frozenset({CONFIG_ENV, "FTI_VENV", "FTI_NATIVE"})
_RENAMED = {r.old: r for r in RENAMED}

_config_file: ContextVar[Path | None] = ContextVar("fti_config_file", default=None)
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("fti_environ", default=None)
_reported: set[str] = set()  # lines already logged by this process: each is said once
_quiet = False  # a child process whose parent already said them: say nothing


class SettingsError(InvalidArgumentError, ValueError):
    """A setting whose value cannot be used, or a config file that cannot be read."""


def quiet_reports() -> None:
    """Say no deprecation or unknown-name lines: the process that started this one has said them."""
    global _quiet
    _quiet = True


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def file_key(env_name: str) -> str:
    """How a setting is written in the config file: `FTI_SERVE_PORT` -> `[serve] port`."""
    name = env_name.removeprefix("FTI_")
    for section in PROCESS_SECTIONS:
        if name.startswith(f"{section}_"):
            return f"[{section.lower()}] {name[len(section) + 1 :].lower()}"
    return name.lower()


@dataclass
class _Resolved:
    values: dict[str, Any] = field(default_factory=dict)
    renamed: list[Renamed] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _resolve(cls: type[FtiSettings], named: Mapping[str, Any]) -> _Resolved:
    """Field values from values named like environment variables; old names first, so a new one wins."""
    known = cls.env_names()
    out = _Resolved()
    olds = [r for r in (_RENAMED.get(n) for n in named) if r is not None and r.new in known]
    # A process's own old override beats the old shared name (FTI_FEATURES_REDIS_PREFIX over
    # FTI_ONLINE_STORE_PREFIX in the worker), as before the rename.
    for r in sorted(olds, key=lambda r: r.only is not None):
        if r.only not in (None, cls.env_section):
            continue
        out.renamed.append(r)
        value = named[r.old]
        out.values[known[r.new]] = value
        if r.zero_disables is not None:
            out.values[known[r.zero_disables]] = str(value).strip() not in ("0", "")
    for name, value in named.items():
        if name in known:
            out.values[known[name]] = value
        elif not (name in _RENAMED or name in _NOT_SETTINGS or cls.belongs_elsewhere(name)):
            out.unknown.append(name)
    return out


def _say_once(message: str) -> None:
    if not _quiet and message not in _reported:
        _reported.add(message)
        log.warning("%s", message)


def _suggest(name: str, known: Mapping[str, str]) -> str | None:
    """The closest known name; `known` maps each candidate spelling (old names too) to its current name."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return known[close[0]] if close else None


class _NamedSource(PydanticBaseSettingsSource):
    """Settings named like environment variables, from the environment or a flattened config file."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        named: Mapping[str, Any],
        where: Path | None = None,
        written: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self._named = named
        self._where = where  # None: the environment; else the config file
        self._written = written or {}  # name -> the key as the file spells it

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ resolves every name at once

    def _show(self, env_name: str) -> str:
        if self._where is None:
            return env_name
        return self._written.get(env_name) or file_key(env_name)

    def __call__(self) -> dict[str, Any]:
        cls = cast("type[FtiSettings]", self.settings_cls)
        resolved = _resolve(cls, self._named)
        origin = "" if self._where is None else f" in {self._where}"
        for r in resolved.renamed:
            _say_once(
                f"setting {self._show(r.old)}{origin} is deprecated, use {self._show(r.new)}"
                " (the old name stops working in the next release)"
            )
        if resolved.unknown:
            names = cls.env_names()
            known = {n: n for n in names} | {r.old: r.new for r in RENAMED if r.new in names}
            items = []
            for name in sorted(resolved.unknown):
                hint = _suggest(name, known)
                items.append(self._show(name) + (f" (did you mean {self._show(hint)}?)" if hint else ""))
            what = "FTI_ environment variables" if self._where is None else f"keys in {self._where}"
            _say_once(f"unknown {what} ignored: {', '.join(items)}")
        return resolved.values


def _flatten_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's values named like variables (`[serve] port` -> FTI_SERVE_PORT), and how each is written."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from exc
    # An `[fti]` table may wrap the settings (a file shared with other tools); both places
    # count, a section's table merged key by key (the top level wins a key set in both).
    wrapped = raw.pop("fti", None)
    root = dict(wrapped) if isinstance(wrapped, dict) else {}
    for key, value in raw.items():
        inner = root.get(key)
        root[key] = inner | value if isinstance(inner, dict) and isinstance(value, dict) else value
    out: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in root.items():
        if isinstance(value, dict):  # a section's table
            for sub, v in value.items():
                out[f"FTI_{key}_{sub}".upper()] = v
                written[f"FTI_{key}_{sub}".upper()] = f"[{key}] {sub}"
        else:
            out[f"FTI_{key}".upper()] = value
            written[f"FTI_{key}".upper()] = str(key)
    return out, written


def _config_path(environ: Mapping[str, str]) -> Path | None:
    """The explicit path, else `fti --config` of the running command, else FTI_CONFIG."""
    if (explicit := _config_file.get()) is not None:
        return explicit
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(CLICK_CONFIG_KEY) is not None:
        return Path(ctx.meta[CLICK_CONFIG_KEY])
    named = environ.get(CONFIG_ENV)
    return Path(named) if named else None


class FtiSettings(BaseSettings):
    """Connection settings, store locations and the topics table common to all pipelines."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    # The process's section: its own fields are FTI_<SECTION>_<FIELD>. Empty for the base.
    env_section: ClassVar[str] = ""

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
    redis_prefix: str = Field(
        "fti", description="Key prefix of the online store in Redis: the worker, backfill and server must agree."
    )

    offline_store_uri: str | None = Field(None, description="Local path or fsspec URI; default <data_dir>/offline.")
    registry_uri: str | None = Field(None, description="Local path or fsspec URI; default <data_dir>/registry.")
    definitions_path: Path = Field(Path("examples/fraud/features.yaml"), description="Your feature definitions (YAML).")

    events_topic: str = Field("fti.events", description="Raw events and labels (fti.v1.Event).")
    events_topic_partitions: int = Field(4, ge=1, description="Partitions of the events topic when created.")
    events_topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of the events topic, and of the worker's re-keyed topic."
    )
    dlq_topic: str = Field("fti.events.dlq", description="Dead letters: original bytes + reason header.")
    dlq_topic_partitions: int = Field(1, ge=1, description="Partitions of the dead-letter topic when created.")
    dlq_topic_replication_factor: int = Field(1, ge=1, description="Replication factor of the dead-letter topic.")
    models_topic: str = Field("fti.models", description="Model lifecycle events (fti.v1.ModelEvent).")
    models_topic_partitions: int = Field(1, ge=1, description="Partitions of the model topic when created.")
    models_topic_replication_factor: int = Field(1, ge=1, description="Replication factor of the model topic.")
    rekeyed_topic_partitions: int | None = Field(
        None, ge=1, description="Partitions of the worker's re-keyed topic; default: the events topic's."
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_explain(type(self), exc)) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.env_section not in PROCESS_SECTIONS:
            raise TypeError(f"{cls.__name__}.env_section must be one of {PROCESS_SECTIONS}, not {cls.env_section!r}")

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The environment variable of a field: FTI_<FIELD>, or FTI_<SECTION>_<FIELD> for a process's own."""
        if cls.env_section and field_name not in FtiSettings.model_fields:
            return f"FTI_{cls.env_section}_{field_name.upper()}"
        return f"FTI_{field_name.upper()}"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Environment variable -> field, for every field of this class."""
        return {cls.env_name(name): name for name in cls.model_fields}

    @classmethod
    def belongs_elsewhere(cls, env_name: str) -> bool:
        """Whether the variable is in another process's section (that process checks it)."""
        name = env_name.removeprefix("FTI_")
        return any(name.startswith(f"{s}_") for s in PROCESS_SECTIONS if s != cls.env_section)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _environ.get()
        if environ is None:
            environ = os.environ
        named_env = {k: v for k, v in environ.items() if k.startswith("FTI_")}
        sources: list[PydanticBaseSettingsSource] = [init_settings, _NamedSource(settings_cls, named_env)]
        path = _config_path(environ)
        if path is not None:
            named_file, written = _flatten_file(path)
            sources.append(_NamedSource(settings_cls, named_file, path, written))
        return tuple(sources)

    @property
    def offline_root(self) -> str:
        return self.offline_store_uri or str(self.data_dir / "offline")

    @property
    def registry_root(self) -> str:
        return self.registry_uri or str(self.data_dir / "registry")

    @property
    def topics(self) -> TopicTable:
        """The topics table every process creates topics from."""
        return TopicTable(
            events=TopicSpec(self.events_topic, self.events_topic_partitions, self.events_topic_replication_factor),
            dlq=TopicSpec(self.dlq_topic, self.dlq_topic_partitions, self.dlq_topic_replication_factor),
            models=TopicSpec(self.models_topic, self.models_topic_partitions, self.models_topic_replication_factor),
            rekeyed_partitions=self.rekeyed_topic_partitions or self.events_topic_partitions,
        )

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


def _explain(cls: type[FtiSettings], exc: ValidationError) -> str:
    """One line naming each bad variable as a person sets it, not the field as the code names it."""
    parts = []
    for err in exc.errors():
        field_name = str(err["loc"][0]) if err["loc"] else ""
        info = cls.model_fields.get(field_name)
        name = cls.env_name(field_name) if info is not None else field_name or "settings"
        secret = info is not None and "SecretStr" in str(info.annotation)
        show = "input" in err and not isinstance(err["input"], dict) and not secret
        shown = f"{name}={err['input']!r}" if show else name
        parts.append(f"{shown}: {err['msg']}")
    return "; ".join(parts)


def load_settings(
    cls: type[_S] = FtiSettings,  # type: ignore[assignment]
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> _S:
    """Build a process's frozen settings object.

    `config_file` takes the place of `fti --config` / FTI_CONFIG, and `environ` of
    `os.environ` (a child process's environment, say); `overrides` win over both.
    """
    file_token = _config_file.set(config_file)
    env_token = _environ.set(environ)
    try:
        return cls(**overrides)
    finally:
        _environ.reset(env_token)
        _config_file.reset(file_token)
