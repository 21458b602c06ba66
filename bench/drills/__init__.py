"""Drills as code (`make drills`): the pipeline under broker, Redis, worker and disk faults, and fuzz.

Each drill runs against a private stack (its own Kafka and Redis on free ports, started with
`fti stack up` and its own `FTI_STACK_DIR`), never the shared one, since drills kill them.
"""
