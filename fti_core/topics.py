"""The one table of Kafka topics the pipelines use, and creating the missing ones.

`fti stack up`, the feature worker and the registry's event sink and source all create
topics from this table (`FtiSettings.topics`), so a topic gets the same partition count and
replication factor whichever process creates it first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fti_core.errors import UnavailableError

__all__ = ["TopicSpec", "TopicTable", "create_missing_topics"]


@dataclass(frozen=True)
class TopicSpec:
    """A topic as it is created: brokers never auto-create them, so counts are explicit."""

    name: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True)
class TopicTable:
    """Raw events, dead letters and model events, plus the worker's re-keyed topic's partitions.

    The re-keyed topic's name depends on the worker's app id, so only its partition count is
    here; it is created with the events topic's replication factor.
    """

    events: TopicSpec
    dlq: TopicSpec
    models: TopicSpec
    rekeyed_partitions: int

    def source(self, name: str) -> TopicSpec:
        """A source's topic (`sources:` in the definitions) when the worker has to create it:
        like the events topic, which it is read beside."""
        return TopicSpec(name, self.events.partitions, self.events.replication_factor)

    def pipeline(self) -> tuple[TopicSpec, ...]:
        """The topics every deployment has (what `fti stack up` / `fti stack topics` create)."""
        return (self.events, self.dlq, self.models)


def create_missing_topics(conf: Mapping[str, Any], specs: Iterable[TopicSpec], *, timeout_s: float = 30) -> list[str]:
    """Create those of `specs` that do not exist yet; returns the names this call created.

    A topic another process creates at the same moment counts as existing. Raises
    UnavailableError when the cluster cannot be reached or refuses a topic.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(dict(conf))
    created: list[str] = []
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
        new = [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor)
            for s in specs
            if s.name not in existing
        ]
        for name, fut in (admin.create_topics(new) if new else {}).items():
            try:
                fut.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    except KafkaException as exc:
        raise UnavailableError(f"cannot create Kafka topics: {exc}") from exc
    return sorted(created)
