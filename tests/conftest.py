"""Shared fixtures. Integration tests use the real Kafka and Redis that `fti stack up` starts.

Addresses come from FTI_KAFKA_BOOTSTRAP_SERVERS / FTI_REDIS_URL (defaults localhost:9092 and
redis://localhost:6379/0). Every test gets fresh uuid-named topics and a fresh Redis key prefix,
so tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fti_core.settings import FtiSettings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "fti-data"


@pytest.fixture
def settings(tmp_data_dir: Path) -> FtiSettings:
    """Settings from the environment, with local stores in a per-test folder."""
    return FtiSettings(data_dir=tmp_data_dir)


@pytest.fixture
def unique() -> Callable[[str], str]:
    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def kafka_bootstrap() -> str:
    return os.environ.get("FTI_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")


@pytest.fixture
def redis_url() -> str:
    return os.environ.get("FTI_REDIS_URL", "redis://localhost:6379/0")


@pytest.fixture
def topic_factory(kafka_bootstrap: str, unique: Callable[[str], str]) -> Iterator[Callable[..., str]]:
    """Creates uuid-named topics with explicit partition counts; deletes them afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = unique(prefix)
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=30)


@pytest.fixture
def redis_prefix(redis_url: str, unique: Callable[[str], str]) -> Iterator[str]:
    """A fresh key prefix; its keys are deleted after the test."""
    import redis

    prefix = unique("fti-test")
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
