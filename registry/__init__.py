"""The model registry: immutable model versions with lineage, aliases and their history, model
events on Kafka, and the promoter. It knows nothing of the feature store or of any pipeline."""
