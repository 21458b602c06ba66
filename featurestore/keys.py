"""Limits on the keys every store and reader shares, so what the worker accepts the server can serve."""

from __future__ import annotations

__all__ = ["MAX_ENTITY_KEY_CHARS", "MAX_EVENT_ID_CHARS"]

# An entity key names a Redis key and a parquet string; the worker dead-letters a longer one
# (INVALID_KEY) and the server refuses it (INVALID_ARGUMENT), so none is computed unservable.
MAX_ENTITY_KEY_CHARS = 512
MAX_EVENT_ID_CHARS = 1024
