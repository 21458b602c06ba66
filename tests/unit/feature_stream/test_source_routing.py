"""Events of a source's topic through the processor: aggregated exactly, always via the re-keyed
topic, with watermarks scoped to their own topic's keys."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from feature_stream.processor import InMessage, Processor
from feature_stream.state import InMemoryStateStore
from featurestore.definitions import parse_definitions
from featurestore.offline import OfflineStore
from featurestore.online import AsyncInMemoryOnlineStore

from .test_processor import ListOutbox, _run, _skews

DEFS = parse_definitions(
    {
        "sources": [
            {
                "name": "rides",
                "event_type": "ride_completed",
                "topics": ["rides.v1"],
                "format": "json",
                "event_time": {"field": "ts"},
                "event_id": {"field": "id"},
                "entities": {"route": ["from", "to"]},
                "values": {"fare": "fare"},
            }
        ],
        "views": [
            {
                "name": "routes",
                "version": 1,
                "source": "ride_completed",
                "entity": "route",
                "allowed_lateness": "1m",
                "ttl": "1d",
                "features": [
                    {"name": "n", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
                    {"name": "fare", "agg": "sum", "field": "fare", "window": {"size": "1h"}},
                ],
            }
        ],
    }
)


def _rides(n: int) -> list[dict[str, Any]]:
    rng = random.Random(21)
    t0 = 1_700_000_000_000
    return [
        {
            "id": f"r{i}",
            "ts": t0 + i * 5_000 - rng.randint(0, 90_000),  # out of order: some beyond the lateness
            "from": rng.choice("ab"),
            "to": rng.choice("xy|"),
            "fare": rng.randint(1, 99) * 0.5,
        }
        for i in range(n)
    ]


async def test_source_events_take_the_rekeyed_topic_and_stay_exact(tmp_path: Path) -> None:
    offline = OfflineStore(str(tmp_path))
    online = AsyncInMemoryOnlineStore()
    await online.register_views(DEFS.views)
    outbox = ListOutbox()
    proc = Processor(DEFS, InMemoryStateStore(), online, offline, outbox)
    rides = _rides(1500)
    # Keyed by the route key itself: on the raw topic that would be aggregated where it was read.
    msgs = [
        InMessage("rides.v1", i % 3, i, f"{r['from']}|{r['to']}".encode(), json.dumps(r).encode(), own_keys=True)
        for i, r in enumerate(rides)
    ]
    await proc.ingest(msgs[:10])
    assert len(outbox.forwarded) == 10  # nothing aggregated locally
    outbox.forwarded = []
    await _run(proc, outbox, msgs[10:], 200)
    await proc.flush()
    proc.reset()
    await _run(proc, outbox, msgs[1000:], 300)  # a replay after a crash changes nothing
    await _run(proc, outbox, [InMessage("rides.v1", 0, 10**6, b"k", msgs[7].value, own_keys=True)], 1)  # a copy
    await proc.flush()

    assert outbox.dead == []
    archive = offline.read_archive()
    assert archive["event_id"].nunique() == len(rides) and set(archive["source"]) == {"rides"}
    assert archive["late"].any() and not archive["late"].all()
    for s in _skews(DEFS, offline, online):
        assert s.mismatches == [] and s.probes > 0, (s.view, s.mismatches[:5])


def test_a_source_topic_keeps_its_keys_apart() -> None:
    raw = InMessage("fti.events", 0, 1, b"k", b"")
    mine = InMessage("rides.v1", 0, 1, b"k", b"", own_keys=True)
    unkeyed = InMessage("rides.v1", 2, 1, None, b"", own_keys=True)
    assert raw.state_key == "k"
    assert mine.state_key != raw.state_key and unkeyed.state_key != InMessage("fti.events", 2, 1, None, b"").state_key
