"""Settings of the local stack (`fti stack`), from FTI_ environment variables or the config file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["StackSettings"]


class StackSettings(FtiSettings):
    stack_dir: Path | None = Field(
        None, description="Where broker and Redis keep data and logs; default <data_dir>/stack."
    )
    stack_kafka_version: str = Field("4.0.1", description="Apache Kafka version fetched from Maven Central.")
    stack_kafka_controller_port: int = Field(9093, description="KRaft controller listener port.")
    stack_kafka_heap: str = Field("768m", description="Broker JVM heap (-Xmx).")
    stack_events_partitions: int = Field(4, description="Partitions of the raw events topic when created.")
    stack_start_timeout_s: float = Field(120.0, description="How long `up` waits for both to answer.")

    @property
    def root(self) -> Path:
        return (self.stack_dir or self.data_dir / "stack").resolve()

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return host or "localhost", int(port)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        url = urlparse(self.redis_url.get_secret_value())
        return url.hostname or "localhost", url.port or 6379

    @property
    def redis_password(self) -> str | None:
        return urlparse(self.redis_url.get_secret_value()).password

    def pipeline_topics(self) -> dict[str, int]:
        """Topics the pipelines use, with explicit partition counts (the broker never auto-creates)."""
        return {self.events_topic: self.stack_events_partitions, self.dlq_topic: 1, self.models_topic: 1}
