"""The feature store's shared layout: what the feature pipeline writes and the others read."""
