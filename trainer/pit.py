"""Deprecated: the point-in-time join moved to `featurestore.pit` (the SDK's, shared with the trainer).

This module re-exports it for one release and warns when imported.
"""

from __future__ import annotations

import warnings

from featurestore.pit import (
    LABEL_TIME,
    TARGET,
    JoinStats,
    ViewEvents,
    event_fields,
    feature_column,
    join_point_in_time,
    labels_from_events,
    labels_from_fields,
)

__all__ = [
    "LABEL_TIME",
    "TARGET",
    "JoinStats",
    "ViewEvents",
    "event_fields",
    "feature_column",
    "join_point_in_time",
    "labels_from_events",
    "labels_from_fields",
]

warnings.warn(
    "trainer.pit is deprecated and goes in the next release: import featurestore.pit (or use featurestore.sdk)",
    DeprecationWarning,
    stacklevel=2,
)
