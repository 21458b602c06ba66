"""Does each dependency of the worker answer? What the supervisor asks before a restart."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import fsspec
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from feature_stream.settings import FeatureStreamSettings

__all__ = ["dependency_probe"]

_TIMEOUT_S = 5.0


def _redis(settings: FeatureStreamSettings) -> str | None:
    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S
    )
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return f"redis does not answer ({type(exc).__name__}: {exc})"
    finally:
        client.close()


def _kafka(settings: FeatureStreamSettings) -> str | None:
    conf: dict[str, str | int | float | bool] = dict(settings.confluent_config())
    try:
        AdminClient(conf).list_topics(settings.events_topic, timeout=_TIMEOUT_S)
        return None
    except KafkaException as exc:
        return f"kafka does not answer ({exc})"


def _offline(settings: FeatureStreamSettings) -> str | None:
    """A small file written and removed where the worker writes its own files aside."""
    try:
        fs, root = fsspec.core.url_to_fs(settings.offline_root)
        tmp = f"{root.rstrip('/')}/_tmp"
        fs.makedirs(tmp, exist_ok=True)
        probe = f"{tmp}/.probe-{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"ok")
        fs.rm(probe)
        return None
    except OSError as exc:
        return f"offline store {settings.offline_root} is not writable ({type(exc).__name__}: {exc})"


def dependency_probe(settings: FeatureStreamSettings) -> Callable[[], str | None]:
    """A probe that names the first dependency not answering, or returns None when all do."""

    def probe() -> str | None:
        for check in (_redis, _kafka, _offline):
            missing = check(settings)
            if missing is not None:
                return missing
        return None

    return probe
