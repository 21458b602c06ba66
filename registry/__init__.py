"""Model registry and feature-view catalogue: the system of record the pipelines share."""
