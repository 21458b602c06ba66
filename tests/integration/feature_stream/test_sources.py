"""Sources end to end: JSON and a user's Protobuf type, produced by a plain confluent-kafka client
to the user's own topics, aggregated exactly (a composite-key view among them), `verify` clean,
and every message that does not map dead-lettered with its reason."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

from featurestore.keys import join_key
from featurestore.offline import OfflineStore
from featurestore.online import OnlineKey, RedisOnlineStore
from featurestore.sources import load_message_class
from fti.v1 import events_pb2
from tests.fixtures.rides import build_descriptor_set, confluent_frame

from ...waits import committed_offsets, group_members, wait_for
from .conftest import FeaturePipeline
from .test_dead_letters import _read_dlq

HOUR = 3_600_000
WINDOW_1H = {"size": "1h"}


def _definitions(folder: Path, json_topic: str, proto_topic: str) -> Path:
    build_descriptor_set(folder / "rides.binpb")
    doc: dict[str, Any] = {
        "sources": [
            {
                "name": "rides_json",
                "event_type": "ride_completed",
                "topics": [json_topic],
                "format": "json",
                "event_time": {"field": "ts", "unit": "ms"},
                "event_id": {"field": "ride_id"},
                "entities": {"route": ["pickup_zone", "dropoff_zone"]},
                "values": {"fare": "fare_usd", "distance_km": "trip.km", "driver": "driver.id"},
            },
            {
                "name": "rides_pb",
                "event_type": "ride_billed",
                "topics": [proto_topic],
                "format": "protobuf",
                "protobuf": {"descriptor_set": "rides.binpb", "message": "acme.rides.v1.Ride", "wire_format": "auto"},
                "event_time": {"field": "completed_at"},
                "event_id": "hash",
                "entities": {"driver_id": "driver.id"},
                "values": {"fare": "fare_usd", "status": "status"},
            },
        ],
        "views": [
            {
                "name": "route_activity",
                "version": 1,
                "source": "ride_completed",
                "entity": "route",
                "allowed_lateness": "1h",
                "ttl": "1d",
                "features": [
                    {"name": "rides_1h", "agg": "count", "window": WINDOW_1H},
                    {"name": "fare_sum_1h", "agg": "sum", "field": "fare", "window": WINDOW_1H},
                    {"name": "km_max_1h", "agg": "max", "field": "distance_km", "window": WINDOW_1H},
                    {"name": "drivers_1h", "agg": "distinct_count", "field": "driver", "window": WINDOW_1H},
                ],
            },
            {
                "name": "driver_billing",
                "version": 1,
                "source": "ride_billed",
                "entity": "driver_id",
                "allowed_lateness": "1h",
                "ttl": "1d",
                "features": [
                    {"name": "billed_1h", "agg": "count", "window": WINDOW_1H},
                    {"name": "billed_sum_1h", "agg": "sum", "field": "fare", "window": WINDOW_1H},
                ],
            },
        ],
    }
    path = folder / "features.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _rides(start_ms: int, n: int, step_ms: int = 1000) -> list[dict[str, Any]]:
    rng = random.Random(1414)
    zones = ["Z1", "Z|2", "Z\\3", "Z4"]  # separators and escapes inside a part
    return [
        {
            "ride_id": f"ride-{i}",
            "ts": start_ms + i * step_ms,
            "pickup_zone": rng.choice(zones),
            "dropoff_zone": rng.choice(zones),
            "driver": {"id": rng.randint(1, 9), "name": "x"},
            "fare_usd": rng.randint(1, 400) * 0.25,  # quarters: every sum is exact in a double
            "trip": {"km": rng.choice([rng.randint(1, 30), rng.randint(1, 30) + 0.5])},
        }
        for i in range(n)
    ]


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]], rate: float | None = None) -> None:
    """A plain producer, as a user's service would be: nothing of the project's."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    t0 = time.monotonic()
    for n, (key, value) in enumerate(messages, 1):
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
        if rate and n % 100 == 0 and (ahead := n / rate - (time.monotonic() - t0)) > 0:
            time.sleep(ahead)  # pacing the producer, not waiting for the worker
    assert producer.flush(30) == 0


def _expected_routes(rides: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"rides_1h": 0, "fare_sum_1h": 0.0, "km": [], "drivers": set()}
    )
    for r in rides:
        e = out[join_key([r["pickup_zone"], r["dropoff_zone"]])]
        e["rides_1h"] += 1
        e["fare_sum_1h"] += r["fare_usd"]
        e["km"].append(r["trip"]["km"])
        e["drivers"].add(r["driver"]["id"])
    return {
        k: {
            "rides_1h": e["rides_1h"],
            "fare_sum_1h": e["fare_sum_1h"],
            "km_max_1h": max(e["km"]),
            "drivers_1h": len(e["drivers"]),
        }
        for k, e in out.items()
    }


def _proto_messages(folder: Path, start_ms: int, n: int) -> tuple[list[bytes], dict[str, tuple[int, float]]]:
    """Rides of the user's own Protobuf type, every other one with the Confluent header."""
    cls = load_message_class((folder / "rides.binpb").resolve(), "acme.rides.v1.Ride")
    rng = random.Random(1415)
    out: list[bytes] = []
    expected: dict[str, tuple[int, float]] = {}
    for i in range(n):
        driver = rng.randint(100, 120)
        fare = rng.randint(1, 400) * 0.25
        msg: Any = cls(ride_id=f"pb-{i}", driver=cls.Driver(id=driver), fare_usd=fare, status=1)  # type: ignore[attr-defined]
        msg.completed_at.FromMilliseconds(start_ms + i * 1000)
        payload = msg.SerializeToString()
        out.append(confluent_frame(payload, 42, [1]) if i % 2 else payload)
        count, total = expected.get(str(driver), (0, 0.0))
        expected[str(driver)] = (count + 1, total + fare)
    return out, expected


def _raw_event_of_a_sourced_type(time_ms: int) -> bytes:
    ev = events_pb2.Event(event_id="raw-1", event_type="ride_completed", entities={"route": "a|b"}, schema_version=1)
    ev.event_time.FromMilliseconds(time_ms)
    return ev.SerializeToString()


def test_json_and_protobuf_sources_from_a_plain_client_are_exact_and_malformed_ones_dead_lettered(
    feature_pipeline: Callable[..., FeaturePipeline], topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    json_topic, proto_topic = topic_factory("rides-json", 3), topic_factory("rides-pb", 2)
    defs_path = _definitions(tmp_path, json_topic, proto_topic)
    pipe = feature_pipeline(partitions=2, definitions=defs_path)
    pipe.source_topics += [json_topic, proto_topic]
    start = (int(time.time() * 1000) // HOUR - 1) * HOUR  # the previous whole hour: every window holds all
    rides = _rides(start, 600)
    json_msgs: list[tuple[bytes | None, bytes]] = [(None, json.dumps(r).encode()) for r in rides]
    json_msgs.append((None, json.dumps(rides[5]).encode()))  # a copy: dropped as a duplicate (same ride_id)
    bad_json = {
        b"{not json": "DEAD_LETTER_REASON_UNDECODABLE",
        json.dumps({**rides[0], "ride_id": "b1", "ts": None}).encode(): "DEAD_LETTER_REASON_MISSING_EVENT_TIME",
        json.dumps(
            {**rides[0], "ride_id": "b2", "dropoff_zone": None}
        ).encode(): "DEAD_LETTER_REASON_MISSING_ENTITY_KEY",
        json.dumps(
            {**rides[0], "ride_id": "b3", "pickup_zone": {"id": 1}}
        ).encode(): "DEAD_LETTER_REASON_UNMAPPABLE_FIELD",
        json.dumps({**rides[0], "ride_id": "b4", "fare_usd": "12.50"}).encode(): "DEAD_LETTER_REASON_WRONG_TYPE",
        # A lone surrogate escape: valid JSON, not text. It used to stop the worker at every restart.
        json.dumps({**rides[0], "ride_id": "b5", "pickup_zone": "z\ud800"}).encode(): "DEAD_LETTER_REASON_UNDECODABLE",
    }
    for i, data in enumerate(bad_json):
        json_msgs.insert(100 * (i + 1), (b"k", data))
    pb_msgs, pb_expected = _proto_messages(tmp_path, start, 300)
    wrong_index = confluent_frame(pb_msgs[0], 42, [0])  # index [0] is acme.rides.v1.Zone, not Ride
    bad_pb = {b"\xff\xff\xff": "DEAD_LETTER_REASON_UNDECODABLE", wrong_index: "DEAD_LETTER_REASON_BAD_WIRE_FORMAT"}

    bootstrap = pipe.settings.kafka_bootstrap_servers
    _produce(bootstrap, json_topic, json_msgs)
    _produce(bootstrap, proto_topic, [(None, m) for m in pb_msgs] + [(b"d", m) for m in bad_pb])
    on_raw = _raw_event_of_a_sourced_type(start)  # its event type comes from a source: not from the raw topic
    _produce(bootstrap, pipe.settings.events_topic, [(b"a|b", on_raw)])
    pipe.start_worker()
    pipe.wait_caught_up()

    expected_dead = {**bad_json, **bad_pb, on_raw: "DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE"}
    dead = _read_dlq(pipe, len(expected_dead))
    assert sorted(dead) == sorted((reason, data) for data, reason in expected_dead.items())

    online = RedisOnlineStore.from_url(pipe.settings.redis_url.get_secret_value(), pipe.settings.redis_prefix)
    at = start + HOUR - 1
    routes = _expected_routes(rides)
    got = online.read_at([OnlineKey("route_activity", 1, k) for k in routes], at)
    assert {k: dict(v.values) if v else None for k, v in zip(routes, got, strict=True)} == routes
    drivers = sorted(pb_expected)
    got_pb = online.read_at([OnlineKey("driver_billing", 1, d) for d in drivers], at)
    assert {
        d: (v.values["billed_1h"], v.values["billed_sum_1h"]) if v else None
        for d, v in zip(drivers, got_pb, strict=True)
    } == pb_expected

    cli = "from feature_stream.cli import features; features(['verify', '--sample', '0'])"
    done = subprocess.run([sys.executable, "-c", cli], env=pipe.env, capture_output=True, check=False)
    report = done.stdout.decode()
    assert done.returncode == 0 and "OK: no mismatches" in report, report + done.stderr.decode()
    assert "route_activity" in report and "driver_billing" in report


def test_a_source_topic_stays_exact_through_scale_out_and_kill_9(
    feature_pipeline: Callable[..., FeaturePipeline], topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """Two workers share a source topic whose partition count is not the raw topic's, one is
    killed mid-stream: every ride is archived once and every value equals the recomputation."""
    json_topic, proto_topic = topic_factory("rides-json", 3), topic_factory("rides-pb", 1)
    pipe = feature_pipeline(partitions=2, definitions=_definitions(tmp_path, json_topic, proto_topic))
    pipe.source_topics += [json_topic, proto_topic]
    rng = random.Random(77)
    add_after, kill_after_more = rng.randrange(500, 1_500), rng.randrange(300, 1_000)
    rides = _rides((int(time.time() * 1000) // HOUR - 1) * HOUR, 6_000, step_ms=500)  # all in one past hour
    # Keyed by driver: each key's rides in time order on one partition (the key's watermark).
    messages: list[tuple[bytes | None, bytes]] = [
        (str(r["driver"]["id"]).encode(), json.dumps(r).encode()) for r in rides
    ]
    bootstrap, group = pipe.settings.kafka_bootstrap_servers, pipe.settings.app_id
    producer = threading.Thread(target=_produce, args=(bootstrap, json_topic, messages, 1500.0), daemon=True)
    producer.start()

    def acked(at_least: int) -> int:
        def check() -> int:
            for w in pipe.workers:
                assert w.poll() in (None, -signal.SIGKILL), pipe.logs()
            done = sum(committed_offsets(bootstrap, group, json_topic).values())
            return done if done >= at_least else 0

        return wait_for(check, what=f"{at_least} source offsets acked", timeout_s=120, poll_s=0.1, details=pipe.logs)

    first = pipe.start_worker()
    acked(add_after)
    pipe.start_worker()

    def both_assigned() -> bool:
        members = group_members(bootstrap, group)
        return len(members) == 2 and all(members)

    wait_for(both_assigned, what="a stable group of two workers", timeout_s=120, details=pipe.logs)
    acked(min(sum(committed_offsets(bootstrap, group, json_topic).values()) + kill_after_more, len(messages)))
    pipe.kill(first)
    producer.join()
    pipe.wait_caught_up(timeout=180)

    archive = OfflineStore(pipe.settings.offline_root).read_archive()
    missing = {r["ride_id"] for r in rides} - set(archive["event_id"])
    assert not missing, (len(missing), sorted(missing)[:5], _read_dlq(pipe, 1)[:5], pipe.logs()[-3000:])
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, s.mismatches[:10])
    online = RedisOnlineStore.from_url(pipe.settings.redis_url.get_secret_value(), pipe.settings.redis_prefix)
    routes = _expected_routes(rides)
    got = online.read_at([OnlineKey("route_activity", 1, k) for k in routes], max(r["ts"] for r in rides) + 1)
    assert {k: dict(v.values) if v else None for k, v in zip(routes, got, strict=True)} == routes
