"""Settings of `fti registry ...` and its long-running promoter (section FTI_PROMOTER_…).

The model topic, like every topic, is in the shared topics table (`FTI_MODELS_TOPIC*`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["RegistrySettings"]


class RegistrySettings(FtiSettings):
    env_section: ClassVar[str] = "PROMOTER"

    alias: str = Field("production", description="Alias the promoter promotes to.")
    metric: str | None = Field(None, description="Metric to compare; default auc / rmse by task.")
    margin: float = Field(0.0, ge=0.0, description="How much better a candidate must be, in metric units.")
    group_id: str = Field("fti-promoter", description="Consumer group of the promoters (they share the work).")
    actor: str = Field("fti-promoter", description="Who the alias history says moved the alias.")
    resync_interval_s: float = Field(
        30.0, gt=0, description="How often the promoter re-reads the registry for versions it has no event of."
    )
