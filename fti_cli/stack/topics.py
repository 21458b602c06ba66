"""Broker readiness and the pipeline topics, created from the shared topics table."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from fti_cli.stack.errors import StackError
from fti_cli.stack.settings import StackSettings
from fti_core.errors import UnavailableError
from fti_core.topics import create_missing_topics

__all__ = ["ensure_topics", "kafka_ready"]


def _admin_config(settings: StackSettings) -> dict[str, Any]:
    # log_level 0: the broker refusing connections while it starts is expected, not news.
    return {**settings.confluent_config(), "socket.connection.setup.timeout.ms": 2000, "log_level": 0}


def kafka_ready(settings: StackSettings) -> bool:
    try:
        md = AdminClient(_admin_config(settings)).list_topics(timeout=2)
    except KafkaException:
        return False
    return bool(md.brokers)


def ensure_topics(settings: StackSettings) -> list[str]:
    """Create the pipeline topics that do not exist yet; returns the names created."""
    try:
        return create_missing_topics(_admin_config(settings), settings.topics.pipeline())
    except UnavailableError as exc:
        raise StackError(str(exc)) from exc
