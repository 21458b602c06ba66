"""Every setting name the drills use, in one place: the environments their `fti` processes get."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFINITIONS", "StackAddresses", "free_port", "pipeline_env", "shared_kafka", "stack_env"]

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "examples" / "fraud" / "features.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class StackAddresses:
    """Where the drills' stack lives and answers."""

    stack_dir: Path
    kafka: str  # host:port
    redis_port: int
    controller_port: int

    @property
    def topic_prefix(self) -> str:
        return f"drills-{self.stack_dir.name}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


def _base_env() -> dict[str, str]:
    # Our own environment minus any FTI_ setting, so a developer's shell cannot point a drill
    # at the shared stack.
    return {k: v for k, v in os.environ.items() if not k.startswith("FTI_")}


def stack_env(addr: StackAddresses) -> dict[str, str]:
    """What `fti stack up | down | status` needs to manage the private stack."""
    env = _base_env()
    env.update(
        FTI_STACK_DIR=str(addr.stack_dir),
        FTI_STACK_KAFKA_CONTROLLER_PORT=str(addr.controller_port),
        FTI_KAFKA_BOOTSTRAP_SERVERS=addr.kafka,
        FTI_REDIS_URL=addr.redis_url,
        FTI_DATA_DIR=str(addr.stack_dir / "data"),
        # `fti stack up` creates the pipeline topics it is given: name them after this stack, so
        # the default names are never created (and the drills can delete what they made).
        FTI_EVENTS_TOPIC=f"{addr.topic_prefix}.events",
        FTI_DLQ_TOPIC=f"{addr.topic_prefix}.dlq",
        FTI_MODELS_TOPIC=f"{addr.topic_prefix}.models",
    )
    return env


def pipeline_env(
    addr: StackAddresses, name: str, data_dir: Path, partitions: int, redis_failure_mode: str = "unavailable"
) -> dict[str, str]:
    """One drill's pipeline: its own topics, consumer group, Redis prefix and data folder.

    `redis_failure_mode`: what `fti serve` does when Redis is gone (`unavailable` or `missing`).
    """
    run = f"drill-{name}-{uuid.uuid4().hex[:8]}"
    env = stack_env(addr)
    env.update(
        FTI_DATA_DIR=str(data_dir),
        FTI_DEFINITIONS_PATH=str(DEFINITIONS),
        FTI_EVENTS_TOPIC=f"{run}.events",
        FTI_EVENTS_TOPIC_PARTITIONS=str(partitions),
        FTI_DLQ_TOPIC=f"{run}.dlq",
        FTI_MODELS_TOPIC=f"{run}.models",
        FTI_REDIS_PREFIX=run,
        FTI_WORKER_APP_ID=run,
        FTI_WORKER_METRICS_PORT="0",
        FTI_WORKER_LOG_LEVEL="WARNING",
        FTI_WORKER_SESSION_TIMEOUT_S="6",
        FTI_WORKER_HEARTBEAT_INTERVAL_S="1",
        FTI_WORKER_COMMIT_INTERVAL_S="0.5",
        FTI_WORKER_REDIS_TIMEOUT_S="2",
        FTI_SERVE_METRICS_PORT="0",
        FTI_SERVE_REDIS_FAILURE_MODE=redis_failure_mode,
        FTI_PROMOTER_GROUP_ID=f"{run}-promoter",
    )
    return env


def shared_kafka() -> str:
    """The broker of the shared stack (`make test`'s), for the CI share of the drills, which never kill it."""
    return os.environ.get("FTI_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
