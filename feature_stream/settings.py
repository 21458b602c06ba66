"""Settings of the feature pipeline (`FTI_` environment variables or the `[fti]` table of FTI_CONFIG)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["FeatureStreamSettings"]


class FeatureStreamSettings(FtiSettings):
    """Everything `fti features ...` reads; built once in the command and passed down."""

    features_app_id: str = Field("fti-features", description="Faust app id: consumer group and internal topic prefix.")
    features_redis_prefix: str | None = Field(None, description="Overrides FTI_ONLINE_STORE_PREFIX for this worker.")
    features_state_prefix: str = Field(
        "", description="Worker state key prefix; default '<redis prefix>:state:<app id>'."
    )
    features_topic_partitions: int = Field(4, description="Partitions for topics the worker creates when missing.")
    features_replication_factor: int = 1
    features_batch_size: int = Field(2000, description="Most events per processing batch.")
    features_commit_interval_s: float = 1.0
    features_session_timeout_s: float = 10.0
    features_heartbeat_interval_s: float = 1.0
    features_web_port: int = Field(0, description="Faust web server port; 0 disables it.")
    features_metrics_port: int = Field(0, description="Prometheus metrics port; 0 disables it.")
    features_state_slack_ms: int = Field(
        3_600_000, description="Extra state kept per entity beyond its longest window, for cross-key disorder."
    )
    features_dedup_retention_ms: int = Field(86_400_000, description="How long event ids are remembered per key.")
    features_log_level: str = "WARNING"
    features_event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Event loop of the worker; auto uses uvloop when installed."
    )

    @property
    def repartition_topic(self) -> str:
        return f"{self.features_app_id}-{self.events_topic}-rekeyed"

    @property
    def state_prefix(self) -> str:
        return self.features_state_prefix or f"{self.online_prefix}:state:{self.features_app_id}"

    @property
    def online_prefix(self) -> str:
        return self.features_redis_prefix or self.online_store_prefix
