"""The `fti` command: the composition root that wires the pipelines into one CLI."""
