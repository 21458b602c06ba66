"""The feature store's contract: definitions and catalogue, the online store (Redis), the offline
store (parquet) and its snapshots, and the typed feature values that cross between them.

The feature pipeline writes it; the trainer and the inference server read it. It knows nothing of
the model registry or of any pipeline.
"""

from fti_core import native

# Before any module of the package is imported: a compiled hot path older than its source is not used.
native.guard()
