"""Settings of `fti train`, from FTI_ environment variables (and the FTI_CONFIG file)."""

from __future__ import annotations

from pydantic import Field

from registry.models.settings import RegistrySettings

__all__ = ["TrainerSettings"]


class TrainerSettings(RegistrySettings):
    train_seed: int | None = Field(None, description="Overrides the model's params seed; --seed overrides this.")
    train_num_threads: int = Field(2, ge=1, description="Fixed, because LightGBM results depend on it.")
    train_exact_matches: bool = Field(True, description="A feature row stamped exactly at the label time counts.")
    train_log_every: int = Field(25, ge=1, description="Progress line every N boosting rounds.")
    train_emit_events: bool = Field(True, description="Emit VersionPublished on the model topic.")
    code_version: str | None = Field(None, description="Recorded lineage; default: git commit of the code.")
