"""Broker readiness and the topics the pipelines use, created with explicit partition counts."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fti_cli.stack.errors import StackError
from fti_cli.stack.settings import StackSettings

__all__ = ["ensure_topics", "kafka_ready"]


def _admin(settings: StackSettings) -> AdminClient:
    # log_level 0: the broker refusing connections while it starts is expected, not news.
    return AdminClient({**settings.confluent_config(), "socket.connection.setup.timeout.ms": 2000, "log_level": 0})


def kafka_ready(settings: StackSettings) -> bool:
    try:
        md = _admin(settings).list_topics(timeout=2)
    except KafkaException:
        return False
    return bool(md.brokers)


def ensure_topics(settings: StackSettings) -> list[str]:
    """Create the pipeline topics that do not exist yet; returns the names created."""
    admin = _admin(settings)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = {t: n for t, n in settings.pipeline_topics().items() if t not in existing}
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1) for t, n in wanted.items()])
    for topic, fut in futures.items():
        try:
            fut.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"could not create topic {topic}: {exc}") from exc
    return sorted(wanted)
