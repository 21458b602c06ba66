"""Source messages (json, protobuf with and without the Confluent header) decoded into events,
and each way a message fails to map dead-lettered with its reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.message import Message

from feature_stream.codec import DeadLetter, RawEvent, decode_event
from featurestore.definitions import Definitions, load_definitions, parse_definitions
from featurestore.sources import load_message_class
from fti.v1 import events_pb2
from tests.fixtures.rides import ROUTE_VIEW, build_descriptor_set, confluent_frame

VIEWS: list[dict[str, Any]] = [
    ROUTE_VIEW,
    {
        "name": "txn",
        "version": 1,
        "source": "transaction",
        "entity": "card_id",
        "ttl": "1d",
        "features": [{"name": "n", "agg": "count", "window": {"size": "1h"}}],
    },
]
JSON_SOURCE: dict[str, Any] = {
    "name": "rides",
    "event_type": "ride_completed",
    "topics": ["rides.v1"],
    "format": "json",
    "event_time": {"field": "ts", "unit": "s"},
    "event_id": {"field": "ride_id"},
    "entities": {"route": ["pickup_zone", "dropoff_zone"], "driver_id": "driver.id"},
    "values": {"fare": "fare_usd", "status": "status", "distance_km": "trip.km", "shared": "shared"},
}
RIDE: dict[str, Any] = {
    "ride_id": "r1",
    "ts": 1_700_000_000,
    "pickup_zone": "Z|1",
    "dropoff_zone": "Z2",
    "driver": {"id": 42, "name": "Ann"},
    "fare_usd": 12.5,
    "status": "completed",
    "trip": {"km": 3},
    "shared": False,
}
R = events_pb2


def _json_defs(**changes: Any) -> Definitions:
    return parse_definitions({"views": copy.deepcopy(VIEWS), "sources": [{**copy.deepcopy(JSON_SOURCE), **changes}]})


def _ride(**changes: Any) -> bytes:
    return json.dumps({**copy.deepcopy(RIDE), **changes}).encode()


def _ok(result: RawEvent | DeadLetter) -> RawEvent:
    assert isinstance(result, RawEvent), result
    return result


def _dead(result: RawEvent | DeadLetter) -> DeadLetter:
    assert isinstance(result, DeadLetter), result
    return result


def test_a_json_message_becomes_a_typed_event_with_a_composite_key() -> None:
    ev = _ok(decode_event(_ride(), _json_defs(), "rides.v1"))
    assert (ev.event_type, ev.event_id, ev.time_ms, ev.source) == ("ride_completed", "r1", 1_700_000_000_000, "rides")
    assert ev.entities == {"route": "Z\\|1|Z2", "driver_id": "42"}
    assert ev.values == {"fare": 12.5, "status": "completed", "distance_km": 3, "shared": False}
    assert type(ev.values["distance_km"]) is int and type(ev.values["shared"]) is bool


def test_a_null_or_absent_value_is_left_out() -> None:
    ev = _ok(decode_event(_ride(fare_usd=None, trip={}), _json_defs(), "rides.v1"))
    assert "fare" not in ev.values and "distance_km" not in ev.values


@pytest.mark.parametrize(
    ("unit", "ts", "ms"),
    [
        ("ms", 1_700_000_000_123, 1_700_000_000_123),
        ("s", 1_700_000_000, 1_700_000_000_000),
        ("s", 1_700_000_000.123, 1_700_000_000_123),  # rounded to the nearest millisecond
        ("us", 1_700_000_000_123_999, 1_700_000_000_123),
        ("ns", 1_700_000_000_123_999_999, 1_700_000_000_123),
        ("iso8601", "2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("iso8601", "2023-11-14T23:13:20.123+01:00", 1_700_000_000_123),
        ("iso8601", "2023-11-14T22:13:20", 1_700_000_000_000),  # no offset: UTC
    ],
)
def test_event_time_units(unit: str, ts: Any, ms: int) -> None:
    defs = _json_defs(event_time={"field": "ts", "unit": unit})
    assert _ok(decode_event(_ride(ts=ts), defs, "rides.v1")).time_ms == ms


def test_a_hashed_event_id_ignores_key_order_and_spacing() -> None:
    defs = _json_defs(event_id="hash")
    a = _ok(decode_event(_ride(), defs, "rides.v1"))
    b = _ok(decode_event(json.dumps(dict(reversed(RIDE.items())), indent=2).encode(), defs, "rides.v1"))
    c = _ok(decode_event(_ride(fare_usd=13), defs, "rides.v1"))
    assert a.event_id == b.event_id != c.event_id and len(a.event_id) == 64


def test_a_confluent_json_schema_header_is_skipped() -> None:
    ev = _ok(decode_event(b"\x00\x00\x00\x00\x07" + _ride(), _json_defs(), "rides.v1"))
    assert ev.event_id == "r1"


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        (b"{not json", R.DEAD_LETTER_REASON_UNDECODABLE, "not JSON"),
        (b"[1, 2]", R.DEAD_LETTER_REASON_UNDECODABLE, "a JSON list, not an object"),
        (_ride(ts=None), R.DEAD_LETTER_REASON_MISSING_EVENT_TIME, "event_time field 'ts' is absent"),
        (_ride(ride_id=""), R.DEAD_LETTER_REASON_MISSING_EVENT_ID, "event_id field 'ride_id' is absent"),
        (_ride(dropoff_zone=None), R.DEAD_LETTER_REASON_MISSING_ENTITY_KEY, "entity route: field 'dropoff_zone'"),
        (_ride(pickup_zone={"a": 1}), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "field 'pickup_zone' is a object"),
        (_ride(pickup_zone=True), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "field 'pickup_zone' is a bool"),
        (_ride(pickup_zone=1.5), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "field 'pickup_zone' is a float"),
        (_ride(ride_id=[1]), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "event_id field 'ride_id' is a list"),
        (_ride(ts="yesterday"), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "'ts' is a text, not a number of s"),
        (_ride(trip="long"), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "field 'trip' is a text, not an object"),
        (_ride(status=["a"]), R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD, "value status (field 'status') is a list"),
        (_ride(fare_usd="12"), R.DEAD_LETTER_REASON_WRONG_TYPE, "fare='12' is a str, not float"),
        (_ride(fare_usd=2**70), R.DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE, "beyond int64"),
        (_ride(fare_usd=1e300), R.DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE, "fare=1e+300 is outside"),
        (_ride()[:-1] + b', "fare_usd": NaN}', R.DEAD_LETTER_REASON_NON_FINITE_VALUE, "value fare=nan"),
        (_ride(ts=10_000_000_000), R.DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE, "not within 1900-01-01"),
        (_ride(pickup_zone="z" * 600), R.DEAD_LETTER_REASON_INVALID_KEY, "entity key route of 603 characters"),
        # Lone surrogate escapes: valid JSON, but no text a Protobuf, Arrow or state string holds.
        (_ride(status="@").replace(b"@", b"ok\\ud800"), R.DEAD_LETTER_REASON_UNDECODABLE, "lone surrogate"),
        (_ride(ride_id="@").replace(b"@", b"r\\uDC00"), R.DEAD_LETTER_REASON_UNDECODABLE, "lone surrogate"),
        (_ride(pickup_zone="@").replace(b"@", b"\\udfff"), R.DEAD_LETTER_REASON_UNDECODABLE, "lone surrogate"),
        (_ride(note="@").replace(b"@", b"\\ud83d"), R.DEAD_LETTER_REASON_UNDECODABLE, "lone surrogate"),
    ],
)
def test_json_messages_that_do_not_map_are_dead_lettered(data: bytes, reason: int, detail: str) -> None:
    letter = _dead(decode_event(data, _json_defs(), "rides.v1"))
    assert letter.reason == reason, letter
    assert detail in letter.detail


def test_a_surrogate_pair_escape_is_one_character_and_an_escaped_backslash_is_text() -> None:
    data = _ride(status="@", pickup_zone="#").replace(b"@", b"ok \\ud83d\\ude00").replace(b"#", b"\\\\ud800")
    ev = _ok(decode_event(data, _json_defs(), "rides.v1"))
    assert ev.values["status"] == "ok \U0001f600"
    assert ev.entities["route"].startswith("\\\\ud800")  # a backslash and "ud800", escaped in the key


def test_an_iso8601_source_refuses_numbers_and_bad_text() -> None:
    defs = _json_defs(event_time={"field": "ts", "unit": "iso8601"})
    for ts, detail in ((1_700_000_000, "is a int, not ISO-8601 text"), ("14/11/2023", "is not ISO-8601")):
        letter = _dead(decode_event(_ride(ts=ts), defs, "rides.v1"))
        assert letter.reason == R.DEAD_LETTER_REASON_UNMAPPABLE_FIELD and detail in letter.detail


def _envelope(event_type: str) -> bytes:
    ev = events_pb2.Event(event_id="e1", event_type=event_type, entities={"card_id": "c1", "route": "a|b"})
    ev.event_time.FromMilliseconds(1_700_000_000_000)
    ev.schema_version = 1
    return ev.SerializeToString()


def test_each_event_type_has_one_way_in() -> None:
    defs = _json_defs()
    assert _ok(decode_event(_envelope("transaction"), defs, "fti.events")).event_type == "transaction"
    letter = _dead(decode_event(_envelope("ride_completed"), defs, "fti.events"))
    assert letter.reason == R.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE and "comes from source rides" in letter.detail


def test_an_fti_event_source_takes_envelopes_of_its_event_type_only() -> None:
    src = {"name": "cards", "event_type": "transaction", "topics": ["cards.v1"]}
    defs = parse_definitions({"views": copy.deepcopy(VIEWS[1:]), "sources": [src]})
    assert _ok(decode_event(_envelope("transaction"), defs, "cards.v1")).event_type == "transaction"
    letter = _dead(decode_event(_envelope("refund"), defs, "cards.v1"))
    assert letter.reason == R.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE and "source cards" in letter.detail
    assert _dead(decode_event(_envelope("transaction"), defs, "fti.events")).reason == (
        R.DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE
    )


# --- protobuf -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rides")
    build_descriptor_set(out / "rides.binpb")
    return out


def _proto_defs(folder: Path, wire_format: str) -> Definitions:
    src = {
        **copy.deepcopy(JSON_SOURCE),
        "format": "protobuf",
        "protobuf": {"descriptor_set": "rides.binpb", "message": "acme.rides.v1.Ride", "wire_format": wire_format},
        "event_time": {"field": "completed_at"},
        "values": {"fare": "fare_usd", "status": "status", "distance_km": "trip.km"},
    }
    path = folder / f"features-{wire_format}.yaml"
    path.write_text(yaml.safe_dump({"views": copy.deepcopy(VIEWS), "sources": [src]}))
    return load_definitions(path)


def _proto_ride(folder: Path, **fields: Any) -> Message:
    cls = load_message_class((folder / "rides.binpb").resolve(), "acme.rides.v1.Ride")
    base: dict[str, Any] = {
        "ride_id": "r1",
        "driver": cls.Driver(id=42, name="Ann"),  # type: ignore[attr-defined]
        "pickup_zone": "Z1",
        "dropoff_zone": "Z2",
        "fare_usd": 12.5,
        "status": cls.Status.Value("STATUS_COMPLETED"),  # type: ignore[attr-defined]
        "trip": cls.Trip(km=3.25),  # type: ignore[attr-defined]
    }
    msg = cls(**{**base, **fields})
    msg.completed_at.FromMilliseconds(1_700_000_000_123)  # type: ignore[attr-defined]
    return msg


@pytest.mark.parametrize(
    ("wire_format", "framed"),
    [("plain", False), ("confluent", True), ("auto", False), ("auto", True)],
)
def test_a_user_protobuf_type_is_decoded_with_or_without_the_confluent_header(
    proto_dir: Path, wire_format: str, framed: bool
) -> None:
    payload = _proto_ride(proto_dir).SerializeToString()
    data = confluent_frame(payload, 7, [1]) if framed else payload
    ev = _ok(decode_event(data, _proto_defs(proto_dir, wire_format), "rides.v1"))
    assert (ev.event_id, ev.time_ms, ev.source) == ("r1", 1_700_000_000_123, "rides")
    assert ev.entities == {"route": "Z1|Z2", "driver_id": "42"}
    assert ev.values == {"fare": 12.5, "status": "STATUS_COMPLETED", "distance_km": 3.25}


def test_unset_protobuf_fields_with_presence_are_absent(proto_dir: Path) -> None:
    msg = _proto_ride(proto_dir)
    msg.ClearField("fare_usd")
    msg.ClearField("trip")
    ev = _ok(decode_event(msg.SerializeToString(), _proto_defs(proto_dir, "plain"), "rides.v1"))
    assert "fare" not in ev.values and "distance_km" not in ev.values
    assert ev.values["status"] == "STATUS_COMPLETED"


def test_an_integer_time_field_with_a_unit(proto_dir: Path) -> None:
    path = proto_dir / "features-plain.yaml"
    _proto_defs(proto_dir, "plain")
    doc = yaml.safe_load(path.read_text())
    doc["sources"][0]["event_time"] = {"field": "completed_at_ms", "unit": "ms"}
    path.write_text(yaml.safe_dump(doc))
    defs = load_definitions(path)
    data = _proto_ride(proto_dir, completed_at_ms=1_700_000_000_999).SerializeToString()
    assert _ok(decode_event(data, defs, "rides.v1")).time_ms == 1_700_000_000_999


@pytest.mark.parametrize(
    ("wire_format", "frame", "reason", "detail"),
    [
        ("confluent", None, R.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "no Confluent header"),
        ("confluent", [0], R.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "message indexes [0] name another message"),
        ("auto", [1, 0], R.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "message indexes [1, 0]"),
        ("plain", [1], R.DEAD_LETTER_REASON_UNDECODABLE, "not a acme.rides.v1.Ride"),
    ],
)
def test_protobuf_framing_errors_are_dead_lettered(
    proto_dir: Path, wire_format: str, frame: list[int] | None, reason: int, detail: str
) -> None:
    payload = _proto_ride(proto_dir).SerializeToString()
    data = confluent_frame(payload, 7, frame) if frame is not None else payload
    letter = _dead(decode_event(data, _proto_defs(proto_dir, wire_format), "rides.v1"))
    assert letter.reason == reason and detail in letter.detail, letter


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        (b"\x00\x00\x00", R.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "a Confluent header of 3 bytes"),
        (b"\x00\x00\x00\x00\x07\x82", R.DEAD_LETTER_REASON_BAD_WIRE_FORMAT, "a truncated message index"),
        (b"\xff\xff\xff", R.DEAD_LETTER_REASON_UNDECODABLE, "not a acme.rides.v1.Ride"),
    ],
)
def test_broken_protobuf_bytes_are_dead_lettered(proto_dir: Path, data: bytes, reason: int, detail: str) -> None:
    letter = _dead(decode_event(data, _proto_defs(proto_dir, "auto"), "rides.v1"))
    assert letter.reason == reason and detail in letter.detail, letter


def test_protobuf_missing_parts_are_dead_lettered(proto_dir: Path) -> None:
    defs = _proto_defs(proto_dir, "plain")
    no_time = _proto_ride(proto_dir)
    no_time.ClearField("completed_at")
    no_zone = _proto_ride(proto_dir, dropoff_zone="")
    cases = [
        (no_time, R.DEAD_LETTER_REASON_MISSING_EVENT_TIME, "event_time field 'completed_at' is absent"),
        (no_zone, R.DEAD_LETTER_REASON_MISSING_ENTITY_KEY, "entity route: field 'dropoff_zone' is absent"),
        (_proto_ride(proto_dir, ride_id=""), R.DEAD_LETTER_REASON_MISSING_EVENT_ID, "'ride_id' is absent"),
    ]
    for msg, reason, detail in cases:
        letter = _dead(decode_event(msg.SerializeToString(), defs, "rides.v1"))
        assert letter.reason == reason and detail in letter.detail, letter


def test_a_string_feature_reads_a_source_value_and_a_protobuf_enum_name(proto_dir: Path) -> None:
    views = copy.deepcopy(VIEWS)
    views[0]["features"].append(
        {"name": "top_status", "agg": "most_frequent", "field": "status", "window": {"size": "1h"}}
    )
    defs = parse_definitions({"views": views, "sources": [copy.deepcopy(JSON_SOURCE)]})
    assert _ok(decode_event(_ride(), defs, "rides.v1")).values["status"] == "completed"
    letter = _dead(decode_event(_ride(status=3), defs, "rides.v1"))
    assert letter.reason == R.DEAD_LETTER_REASON_WRONG_TYPE and "status=3" in letter.detail
    ev = _ok(decode_event(_proto_ride(proto_dir).SerializeToString(), _proto_defs(proto_dir, "plain"), "rides.v1"))
    assert ev.values["status"] == "STATUS_COMPLETED"
