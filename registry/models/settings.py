"""Settings of the registry's processes (`fti registry ...`), from FTI_ environment variables."""

from __future__ import annotations

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["RegistrySettings"]


class RegistrySettings(FtiSettings):
    models_topic_partitions: int = Field(3, ge=1, description="Partitions when the model topic is created.")
    models_topic_replication_factor: int = Field(1, ge=1)
    promoter_alias: str = "production"
    promoter_metric: str | None = Field(None, description="Metric to compare; default auc / rmse by task.")
    promoter_margin: float = Field(0.0, ge=0.0, description="How much better a candidate must be, in metric units.")
    promoter_group_id: str = "fti-promoter"
    promoter_actor: str = "fti-promoter"
