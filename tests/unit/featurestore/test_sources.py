"""The `sources:` section: parsed strictly, each error naming its source."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from featurestore.definitions import DefinitionError, load_definitions, parse_definitions
from featurestore.sources import SourceFormat, TimeUnit, WireFormat
from tests.fixtures.rides import ROUTE_VIEW, build_descriptor_set

SOURCE: dict[str, Any] = {
    "name": "rides",
    "event_type": "ride_completed",
    "topics": ["rides.v1"],
    "format": "json",
    "event_time": {"field": "ts", "unit": "s"},
    "event_id": {"field": "ride_id"},
    "entities": {"route": ["pickup_zone", "dropoff_zone"], "driver_id": "driver.id"},
    "values": {"fare": "fare_usd", "distance_km": "trip.km"},
}


def _doc(**changes: Any) -> dict[str, Any]:
    src = copy.deepcopy(SOURCE)
    src.update(changes)
    return {"views": [copy.deepcopy(ROUTE_VIEW)], "sources": [src]}


def test_a_json_source_is_parsed() -> None:
    defs = parse_definitions(_doc())
    (src,) = defs.sources
    assert src.format is SourceFormat.JSON and src.topics == ("rides.v1",)
    assert src.event_time is not None and src.event_time.unit is TimeUnit.S
    assert src.entities == {"route": ("pickup_zone", "dropoff_zone"), "driver_id": ("driver.id",)}
    assert defs.source_topics() == {"rides.v1": src}
    assert defs.event_types == {"ride_completed"} and defs.sourced_event_types == {"ride_completed"}


def test_event_id_hash_and_a_single_topic_string() -> None:
    (src,) = parse_definitions(_doc(event_id="hash", topics="rides.v2")).sources
    assert src.event_id is not None and src.event_id.hash and src.event_id.field is None
    assert src.topics == ("rides.v2",)


def test_sources_leave_view_hashes_alone() -> None:
    plain = parse_definitions({"views": [copy.deepcopy(ROUTE_VIEW)]}).views[0]
    assert parse_definitions(_doc()).views[0].content_hash() == plain.content_hash()


def test_an_fti_event_source_names_only_topics() -> None:
    doc = {
        "views": [copy.deepcopy(ROUTE_VIEW)],
        "sources": [{"name": "r", "event_type": "ride_completed", "topics": ["t"]}],
    }
    (src,) = parse_definitions(doc).sources
    assert src.format is SourceFormat.FTI_EVENT


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(colour="red"), r"source rides: colour: Extra inputs are not permitted"),
        (_doc(format="avro"), r"source rides: format: Input should be 'fti_event', 'json' or 'protobuf'"),
        (_doc(topics=[]), r"source rides: topics must name at least one topic"),
        (_doc(event_time=None), r"source rides: a json source needs event_time"),
        (_doc(event_time={"field": "ts", "unit": "hours"}), r"source rides: event_time.unit: Input should be"),
        (_doc(event_id="uuid"), r"source rides: event_id: .*`hash` or \{field: PATH\}"),
        (_doc(entities={}), r"source rides: a json source needs entities"),
        (_doc(values={"fare": "fare usd"}), r"source rides: 'fare usd' is not a field path"),
        (_doc(format="protobuf"), r"source rides: a protobuf source needs protobuf:"),
        (_doc(format="fti_event"), r"source rides: an fti_event source reads everything from the envelope"),
        (_doc(values={"distance_km": "trip.km"}), r"source rides: view route_activity:1 reads value 'fare'"),
        (
            _doc(entities={"driver_id": "driver.id"}),
            r"source rides: view route_activity:1 reads entity 'route' of 'ride_completed', which the source's",
        ),
    ],
)
def test_bad_sources_are_refused_naming_the_source(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_definitions(doc)


def test_one_source_per_event_type_and_per_topic() -> None:
    doc = _doc()
    doc["sources"].append({**copy.deepcopy(SOURCE), "name": "rides_again", "topics": ["other"]})
    with pytest.raises(DefinitionError, match="source rides_again: event type 'ride_completed' already comes from"):
        parse_definitions(doc)
    doc["sources"][1].update(event_type="ride_cancelled")
    doc["sources"][1].update(topics=["rides.v1"])
    with pytest.raises(DefinitionError, match=r"source rides_again: topic 'rides\.v1' is already read by source rides"):
        parse_definitions(doc)


def _proto_file(tmp_path: Path, **protobuf: Any) -> Path:
    build_descriptor_set(tmp_path / "rides.binpb")
    src = {
        **copy.deepcopy(SOURCE),
        "format": "protobuf",
        "protobuf": {"descriptor_set": "rides.binpb", "message": "acme.rides.v1.Ride", **protobuf},
        "event_time": {"field": "completed_at"},
        "values": {"fare": "fare_usd", "distance_km": "trip.km", "status": "status"},
    }
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump({"views": [copy.deepcopy(ROUTE_VIEW)], "sources": [src]}))
    return path


def test_a_protobuf_descriptor_set_is_read_beside_the_definitions(tmp_path: Path) -> None:
    (src,) = load_definitions(_proto_file(tmp_path, wire_format="confluent")).sources
    assert src.protobuf is not None and src.protobuf.descriptor_set == (tmp_path / "rides.binpb").resolve()
    assert src.protobuf.wire_format is WireFormat.CONFLUENT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"message": "acme.rides.v1.Bike"}, r"source rides: .*holds no message 'acme.rides.v1.Bike'"),
        ({"descriptor_set": "nope.binpb"}, r"source rides: cannot read the descriptor set"),
        ({"wire_format": "avro"}, r"source rides: protobuf.wire_format: Input should be"),
    ],
)
def test_bad_protobuf_settings_are_refused(tmp_path: Path, change: dict[str, str], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_definitions(_proto_file(tmp_path, **change))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fare": "fare"}, r"source rides: fare: acme.rides.v1.Ride has no field 'fare'"),
        ({"fare": "tags"}, r"source rides: tags: field 'tags' is repeated"),
        ({"fare": "blob"}, r"source rides: blob: field 'blob' holds bytes"),
        ({"fare": "trip"}, r"source rides: trip: field 'trip' is a message acme.rides.v1.Ride.Trip"),
        ({"fare": "ride_id.x"}, r"source rides: ride_id.x: field 'ride_id' is not a message"),
    ],
)
def test_protobuf_field_paths_are_checked_against_the_message(
    tmp_path: Path, values: dict[str, str], message: str
) -> None:
    path = _proto_file(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["sources"][0]["values"] = values
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(DefinitionError, match=message):
        load_definitions(path)


def test_a_filter_field_must_be_mapped_too() -> None:
    doc = _doc()
    doc["views"][0]["features"].append(
        {"name": "long_1h", "agg": "count", "where": "distance_km > 10", "window": {"size": "1h"}}
    )
    assert parse_definitions(doc).views[0].read_fields == {"fare", "distance_km"}
    doc["sources"][0]["values"] = {"fare": "fare_usd"}
    with pytest.raises(DefinitionError, match="source rides: view route_activity:1 reads value 'distance_km'"):
        parse_definitions(doc)
