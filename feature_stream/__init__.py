"""The feature pipeline: raw Kafka events into features, online (Redis) and offline (parquet)."""

from fti_core import native

# Before any module of the package is imported: a compiled hot path older than its source is not used.
native.guard()
