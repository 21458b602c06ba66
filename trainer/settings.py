"""Settings of `fti train` (section FTI_TRAIN_…, or the `[train]` table of the config file)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["TrainerSettings"]


class TrainerSettings(FtiSettings):
    env_section: ClassVar[str] = "TRAIN"

    seed: int | None = Field(None, description="Overrides the model's params seed; --seed overrides this.")
    num_threads: int = Field(2, ge=1, description="Fixed, because LightGBM results depend on it.")
    exact_matches: bool = Field(True, description="An event stamped exactly at the label time counts.")
    as_served: bool = Field(
        False, description="Windows at a label's time see only events archived by then (as the server saw it)."
    )
    log_every: int = Field(25, ge=1, description="Progress line every N boosting rounds.")
    emit_events: bool = Field(True, description="Emit VersionPublished on the model topic.")
    code_version: str | None = Field(None, description="Recorded lineage; default: git commit of the code.")
