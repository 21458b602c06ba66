"""Label events as a snapshot's archive holds them, for the trainer's unit tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["outcome_labels"]


def outcome_labels(times_ms: npt.NDArray[np.int64], cards: Sequence[str], bad: Sequence[int]) -> pd.DataFrame:
    """One `outcome` label event per row: `bad` (0/1) for `card_id`, stamped at `times_ms`."""
    return pd.DataFrame(
        {
            "event_id": [f"l{i}" for i in range(len(cards))],
            "event_type": "outcome",
            "event_time": pd.to_datetime(times_ms, unit="ms", utc=True).as_unit("ms"),
            "entities": [{"card_id": c} for c in cards],
            "values": [{"bad": int(b)} for b in bad],
            "late": False,
        }
    )
