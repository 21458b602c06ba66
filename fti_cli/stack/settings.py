"""Settings of the local stack (`fti stack`, section FTI_STACK_…, or the `[stack]` table of the config file)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["StackSettings"]


class StackSettings(FtiSettings):
    env_section: ClassVar[str] = "STACK"

    dir: Path | None = Field(None, description="Where broker and Redis keep data and logs; default <data_dir>/stack.")
    kafka_version: str = Field("4.0.1", description="Apache Kafka version fetched from Maven Central.")
    # Written into the broker's config: a fixed port, so 0 ("pick one") is refused.
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller listener port.")
    kafka_heap: str = Field("768m", description="Broker JVM heap (-Xmx).")
    start_timeout_s: float = Field(120.0, gt=0, description="How long `up` waits for both to answer.")

    @property
    def root(self) -> Path:
        return (self.dir or self.data_dir / "stack").resolve()

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
