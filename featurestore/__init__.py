"""The feature store's contract: definitions and catalogue, the online store (Redis), the offline
store (parquet) and its snapshots, and the typed feature values that cross between them.

The feature pipeline writes it; the trainer and the inference server read it. It knows nothing of
the model registry or of any pipeline.
"""
