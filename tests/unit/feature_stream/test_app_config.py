"""The worker's Faust configuration follows its settings: endpoints, ports, the topics table."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, cast

import pytest

from feature_stream.app import _app_config, _check_source_topics
from feature_stream.settings import FeatureStreamSettings
from featurestore.definitions import DefinitionError, parse_definitions


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FTI_"):
            monkeypatch.delenv(key)


def test_web_views_are_off_unless_enabled() -> None:
    conf = _app_config(FeatureStreamSettings(web_port=0))
    assert conf["web_enabled"] is False


def test_web_port_zero_picks_a_free_port_and_says_which(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        conf = _app_config(FeatureStreamSettings(web_enabled=True, web_port=0))
    assert conf["web_enabled"] is True and conf["web_port"] > 0
    assert f"web views on port {conf['web_port']}" in caplog.text
    assert _app_config(FeatureStreamSettings(web_enabled=True, web_port=7001))["web_port"] == 7001


def test_faust_keeps_its_directory_under_the_data_dir_not_the_working_directory(tmp_path: Path) -> None:
    conf = _app_config(FeatureStreamSettings(data_dir=tmp_path, app_id="fx"))
    assert conf["datadir"] == str(tmp_path / "faust" / "fx")


def test_internal_topics_follow_the_topics_table() -> None:
    conf = _app_config(FeatureStreamSettings(events_topic_partitions=6, events_topic_replication_factor=2))
    assert (conf["topic_partitions"], conf["topic_replication_factor"]) == (6, 2)
    conf = _app_config(FeatureStreamSettings(rekeyed_topic_partitions=3))
    assert conf["topic_partitions"] == 3


@pytest.mark.parametrize("topic", ["fti.events", "fti.events.dlq", "fti.models", "fti-features-fti.events-rekeyed"])
def test_a_source_may_not_read_a_topic_of_the_pipeline(topic: str) -> None:
    defs = parse_definitions(
        {
            "sources": [{"name": "mine", "event_type": "ev", "topics": ["ok", topic]}],
            "views": [
                {
                    "name": "v",
                    "version": 1,
                    "source": "ev",
                    "entity": "k",
                    "ttl": "1d",
                    "features": [{"name": "n", "agg": "count", "window": {"size": "1h"}}],
                }
            ],
        }
    )
    with pytest.raises(DefinitionError, match=f"source mine: topic '{re.escape(topic)}' is the"):
        _check_source_topics(FeatureStreamSettings(), defs)


def test_the_consumer_waits_on_the_broker_as_long_and_for_as_much_as_the_settings_say() -> None:
    """Faust fixes aiokafka's fetch wait at 1,500 ms; a fetch long-polling quiet partitions then
    held back records of the busy ones that long (online values seconds old at 3k events/s).
    aiokafka answers a fetch at its first record: a fetch and a batch per handful of records."""
    import asyncio

    from feature_stream.batch_consumer import BatchApp
    from feature_stream.settings import DEFAULT_FETCH_MAX_WAIT_MS, DEFAULT_FETCH_MIN_BYTES

    async def created(settings: FeatureStreamSettings) -> tuple[int, int]:
        app = BatchApp(
            "fetch-wait-test",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            fetch_min_bytes=settings.fetch_min_bytes,
            **_app_config(settings),
        )
        thread = cast(Any, app.consumer)._new_consumer_thread()  # Faust types it as any consumer
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms), int(consumer._fetch_min_bytes)
        finally:
            await consumer.stop()

    assert asyncio.run(created(FeatureStreamSettings(fetch_max_wait_ms=37, fetch_min_bytes=5))) == (37, 5)
    defaults = FeatureStreamSettings()
    assert defaults.fetch_max_wait_ms == DEFAULT_FETCH_MAX_WAIT_MS < 100
    assert defaults.fetch_min_bytes == DEFAULT_FETCH_MIN_BYTES > 1
