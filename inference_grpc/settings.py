"""Settings of `fti serve` (section FTI_SERVE_…) and `fti predict` (section FTI_PREDICT_…).

Shared settings (Kafka, Redis and its key prefix, the registry, the topics table) are
`FTI_<NAME>`; the server's own are `FTI_SERVE_<NAME>` or the `[serve]` table of the config
file (see `fti_core.settings`); the CLI passes its options as overrides. Nothing else in
this package reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["EventLoop", "InferenceSettings", "PredictSettings", "RedisFailureMode"]

# What a prediction does when Redis cannot be read: fail with UNAVAILABLE (the default, so a
# caller can retry elsewhere), or score with every stored feature treated as missing.
RedisFailureMode = Literal["unavailable", "missing"]
# `fti serve`'s event loop: uvloop when installed ("auto"), or insist on one of the two.
EventLoop = Literal["auto", "uvloop", "asyncio"]


class InferenceSettings(FtiSettings):
    """The inference server's settings (one frozen object per process)."""

    env_section: ClassVar[str] = "SERVE"

    model: str = Field("", description="Model the server serves (`fti serve --model`).")
    alias: str = Field("production", description="Registry alias whose current holder is served.")
    swap_on_publish: bool = Field(
        False, description="Serve the newest published version instead of the alias (staging / shadow replicas)."
    )

    host: str = Field("[::]", description="Address the gRPC server binds.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(9095, ge=0, le=65535, description="Prometheus port; 0 picks a free one.")
    metrics_enabled: bool = Field(True, description="Serve /metrics over HTTP.")

    redis_timeout_ms: int = Field(250, gt=0, description="Cap on one online-store read.")
    redis_failure_mode: RedisFailureMode = Field(
        "unavailable", description="Redis unreachable: fail with UNAVAILABLE, or score with features missing."
    )
    redis_coalesce: bool = Field(True, description="Requests ready at the same moment share one Redis round trip.")

    stale_warn_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Warn when more than this share of the model's features are stale or missing (README).",
    )

    event_loop: EventLoop = Field("auto", description="uvloop when installed (auto), or uvloop / asyncio.")

    max_batch_size: int = Field(256, gt=0, description="Largest PredictBatch accepted.")
    max_message_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest request or response message.")
    max_concurrent_rpcs: int | None = Field(None, description="Requests beyond this get RESOURCE_EXHAUSTED.")

    shutdown_grace_s: float = Field(10.0, ge=0, description="In-flight requests get this long to finish on stop.")
    resolve_interval_s: float = Field(
        30.0, gt=0, description="How often the alias is re-read from the registry, in case an event was missed."
    )
    event_group_id: str | None = Field(
        None, description="Kafka group for model events; None gives each replica its own, so each sees every event."
    )

    tls_cert_file: Path | None = Field(None, description="PEM certificate chain; with tls_key_file enables TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA; when set, clients must present a certificate.")


class PredictSettings(FtiSettings):
    """`fti predict`, a command-line client of the server."""

    env_section: ClassVar[str] = "PREDICT"

    target: str = Field("localhost:50051", description="host:port of the server `fti predict` calls.")
