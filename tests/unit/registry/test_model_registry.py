"""The registry's guarantees: immutable unique versions, verified artefacts, safe paths, alias history."""

from __future__ import annotations

import functools
import itertools
import math
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from fti.v1 import models_pb2
from fti_core.errors import ConflictError, IntegrityError, InvalidArgumentError, NotFoundError
from fti_core.tasks import Task
from registry.events import InMemoryModelEventSink
from registry.flavors import UnknownFlavorError
from registry.models import (
    FeatureRef,
    InvalidNameError,
    LabelRef,
    ModelRegistry,
    ModelVersionRecord,
    Vocabulary,
    safe_key,
)

from ..inference_grpc.models_helper import train_model_text

FEATURES = (
    FeatureRef("card_activity", 1, "txn_count_10m", "card_id"),
    FeatureRef("merchant_activity", 2, "amount_mean_1h", "merchant_id"),
)
LABEL = LabelRef(name="is_fraud", event_type="fraud_label", entity="card_id", field="is_fraud")


@functools.cache
def model_bytes(seed: int) -> bytes:
    """A real LightGBM text model over FEATURES: an alias only moves to a loadable version."""
    return train_model_text(seed, n_features=len(FEATURES)).encode()


def publish(reg: ModelRegistry, model: str = "fraud", artefact: bytes = b"tree\n", **kw: object) -> ModelVersionRecord:
    args: dict[str, object] = {
        "features": FEATURES,
        "entities": ("card_id", "merchant_id"),
        "snapshot_id": "snap-1",
        "code_version": "abc123",
        "params": {"learning_rate": "0.05"},
        "metrics": {"auc": 0.9},
        "task": "binary",
        "label": LABEL,
    }
    args.update(kw)
    return reg.publish(model, artefact, **args)  # type: ignore[arg-type]


@pytest.fixture
def sink() -> InMemoryModelEventSink:
    return InMemoryModelEventSink()


@pytest.fixture
def reg(tmp_path: Path, sink: InMemoryModelEventSink) -> ModelRegistry:
    return ModelRegistry.from_uri(str(tmp_path / "registry"), events=sink)


def test_publish_records_lineage_and_round_trips(reg: ModelRegistry, sink: InMemoryModelEventSink) -> None:
    rec = publish(reg)
    assert rec.version == 1
    again = ModelRegistry.from_uri(reg.store.root).get("fraud", 1)  # a fresh reader, no cache
    assert again == rec
    assert again.features == FEATURES and again.label == LABEL and again.metrics == {"auc": 0.9}
    assert [f.entity for f in again.features] == ["card_id", "merchant_id"]
    assert again.flavor == "lightgbm" and again.task is Task.BINARY
    assert again.entities == ("card_id", "merchant_id")  # derived from the features
    through_proto = ModelVersionRecord.from_proto(
        models_pb2.ModelVersion.FromString(rec.to_proto().SerializeToString())
    )
    assert through_proto.features == FEATURES and through_proto.flavor == "lightgbm"
    assert reg.load_artefact("fraud", 1) == b"tree\n"
    assert [e.WhichOneof("kind") for e in sink.events] == ["published"]
    assert sink.events[0].published.version.sha256 == rec.sha256
    assert reg.models() == ["fraud"]


def test_versions_increase_and_unknown_version_is_not_found(reg: ModelRegistry) -> None:
    assert [publish(reg, artefact=f"m{i}".encode()).version for i in range(3)] == [1, 2, 3]
    assert [r.version for r in reg.versions("fraud")] == [1, 2, 3]
    with pytest.raises(NotFoundError, match="no version 9"):
        reg.get("fraud", 9)


def test_two_publishers_in_threads_get_unique_increasing_versions(reg: ModelRegistry) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        mine = ModelRegistry.from_uri(reg.store.root)  # separate clients, shared directory
        for j in range(10):
            v = publish(mine, artefact=f"w{i}-{j}".encode()).version
            with lock:
                got.append(v)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 41))
    assert {reg.load_artefact("fraud", v) for v in got} == {f"w{i}-{j}".encode() for i in range(4) for j in range(10)}


def _publish_in_process(root: str, i: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    reg = ModelRegistry.from_uri(root)
    queue.put([publish(reg, artefact=f"p{i}-{j}".encode()).version for j in range(8)])


def test_two_publisher_processes_get_unique_increasing_versions(reg: ModelRegistry) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_publish_in_process, args=(reg.store.root, i, queue)) for i in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    for versions in results:
        assert versions == sorted(versions)  # each publisher sees its own versions increase
    assert sorted(results[0] + results[1]) == list(range(1, 17))


def test_publisher_killed_before_commit_leaves_no_version(reg: ModelRegistry, tmp_path: Path) -> None:
    publish(reg)
    # What a crash between writing the artefact and committing the record leaves behind.
    reg._put_artefact("fraud", "0" * 64, "txt", b"orphan")
    versions_dir = Path(reg.store.root) / "models/fraud/versions"
    (versions_dir / ".tmp-0000000002.json-dead").write_bytes(b'{"half":')
    assert [r.version for r in reg.versions("fraud")] == [1]
    assert publish(reg, artefact=b"next").version == 2


def test_tampered_artefact_is_refused_naming_the_version(reg: ModelRegistry) -> None:
    rec = publish(reg)
    path = Path(reg.store.root) / rec.artefact_uri
    path.write_bytes(b"tree\nmalicious\n")
    with pytest.raises(IntegrityError, match="model fraud version 1"):
        reg.load_artefact("fraud", 1)


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        "a/../../x",
        "%2e%2e",
        "%2e%2e%2fx",
        "%252e%252e",
        "%252e%252e%252fx",
        "..\\x",
        "a\\b",
        "/etc/passwd",
        "C:\\x",
        "a\x00b",
        "",
        "a/b",
        ".hidden",
        "x" * 200,
    ],
)
def test_path_traversal_names_are_refused(reg: ModelRegistry, name: str) -> None:
    with pytest.raises(InvalidNameError):
        publish(reg, model=name)
    with pytest.raises(InvalidNameError):
        reg.get(name, 1)
    with pytest.raises(InvalidNameError):
        reg.resolve("fraud", name)
    assert isinstance(InvalidNameError("x"), InvalidArgumentError)


@pytest.mark.parametrize("key", ["../x", "a/%2e%2e/b", "a/%252e%252e/b", "/abs", "a\\b", "a\x00", "s3://b/x", "a//b"])
def test_stored_keys_cannot_escape_the_root(key: str) -> None:
    with pytest.raises(InvalidNameError):
        safe_key(key)


def test_artefact_uri_pointing_outside_the_root_is_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    rec = publish(reg)
    record_path = Path(reg.store.root) / "models/fraud/versions/0000000001.json"
    record_path.write_bytes(record_path.read_bytes().replace(rec.artefact_uri.encode(), b"../../../etc/passwd"))
    with pytest.raises(InvalidNameError):
        ModelRegistry.from_uri(reg.store.root).load_artefact("fraud", 1)


def test_alias_moves_history_rollback_and_time_travel(reg: ModelRegistry, sink: InMemoryModelEventSink) -> None:
    for i in range(3):
        publish(reg, artefact=model_bytes(i + 1))
    assert reg.resolve("fraud", "production") is None
    m1 = reg.move_alias("fraud", "production", 1, actor="alice")
    m2 = reg.move_alias("fraud", "production", 2, kind="promoted", actor="promoter", evidence={"auc": 0.91})
    m3 = reg.move_alias("fraud", "production", 3, actor="bob", reason="hotfix")
    resolved = reg.resolve("fraud", "production")
    assert resolved is not None and resolved.version == 3
    back = reg.rollback("fraud", "production", actor="carol", reason="bad latency")
    assert (back.from_version, back.to_version, back.kind, back.sequence) == (3, 2, "rolled_back", 4)
    again = reg.rollback("fraud", "production", actor="carol")
    assert again.to_version == 1  # walks further back, does not flip-flop to 3
    with pytest.raises(ConflictError):
        reg.rollback("fraud", "production", actor="carol")
    history = reg.alias_history("fraud", "production")
    assert [(h.from_version, h.to_version) for h in history] == [(None, 1), (1, 2), (2, 3), (3, 2), (2, 1)]
    assert [h.sequence for h in history] == [1, 2, 3, 4, 5]
    assert reg.alias_at("fraud", "production", m1.at_ms - 1) is None
    # Moves may share a millisecond: at m2's, the holder is the last move made by then.
    assert reg.alias_at("fraud", "production", m2.at_ms) == [h for h in history if h.at_ms <= m2.at_ms][-1].to_version
    assert reg.alias_at("fraud", "production", history[-1].at_ms) == 1
    assert m3.evidence == {} and m2.evidence == {"auc": 0.91}
    moved = [e.alias_moved for e in sink.events if e.WhichOneof("kind") == "alias_moved"]
    assert [m.kind for m in moved][-2:] == [models_pb2.ALIAS_MOVE_KIND_ROLLED_BACK] * 2
    assert reg.aliases("fraud") == {"production": 1}


def test_moving_an_alias_to_an_unknown_version_fails(reg: ModelRegistry) -> None:
    publish(reg, artefact=model_bytes(1))
    with pytest.raises(NotFoundError):
        reg.move_alias("fraud", "production", 7, actor="a")
    with pytest.raises(InvalidArgumentError):
        reg.move_alias("fraud", "production", 1, kind="teleported", actor="a")


def test_concurrent_alias_moves_keep_a_gapless_history(reg: ModelRegistry) -> None:
    for i in range(2):
        publish(reg, artefact=model_bytes(i + 1))

    def mover(v: int) -> None:
        mine = ModelRegistry.from_uri(reg.store.root)
        for _ in range(10):
            mine.move_alias("fraud", "staging", v, actor=f"a{v}")

    threads = [threading.Thread(target=mover, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = reg.alias_history("fraud", "staging")
    assert [h.sequence for h in history] == list(range(1, 21))
    for prev, move in itertools.pairwise(history):
        assert move.from_version == prev.to_version


def test_fsspec_uri_store_works_like_a_directory(unique: object) -> None:
    reg = ModelRegistry.from_uri(f"memory://registry-{os.getpid()}-{id(unique)}")
    rec = publish(reg, artefact=model_bytes(1))
    assert reg.load_artefact("fraud", rec.version) == model_bytes(1)
    reg.move_alias("fraud", "production", 1, actor="a")
    assert reg.alias_history("fraud", "production")[0].to_version == 1


def test_the_published_event_carries_each_features_entity_and_the_flavor(
    reg: ModelRegistry, sink: InMemoryModelEventSink
) -> None:
    publish(reg)
    sent = sink.events[0].published.version
    assert [(f.view, f.entity) for f in sent.features] == [
        ("card_activity", "card_id"),
        ("merchant_activity", "merchant_id"),
    ]
    assert sent.flavor == "lightgbm"


def test_a_version_written_by_fti_0_1_still_loads_as_lightgbm_without_entities(reg: ModelRegistry) -> None:
    old = (Path(__file__).parent / "data" / "version_written_by_fti_0_1.json").read_bytes()
    reg.store.put_exclusive(safe_key("models", "fraud", "artefacts", f"{_TREE_SHA}.txt"), b"tree\n")
    reg.store.put_exclusive(safe_key("models", "fraud", "versions", "0000000001.json"), old)
    rec = reg.get("fraud", 1)
    assert rec.flavor == "lightgbm" and rec.task is Task.BINARY
    assert [(f.view, f.view_version, f.feature, f.entity) for f in rec.features] == [
        ("card_activity", 1, "txn_count_10m", ""),
        ("merchant_activity", 2, "amount_mean_1h", ""),
    ]
    assert rec.entities == ("card_id", "merchant_id")
    assert reg.load_artefact("fraud", 1) == b"tree\n"
    # Written back, it says what it was read as: flavor lightgbm, entities still unknown.
    assert ModelVersionRecord.from_json(rec.to_json()) == rec


_TREE_SHA = "f27e01fe7624cca3e69811a0bf9a4efd9dca9fd39f7a3a8f939cae0cfe8cdfb8"  # sha256(b"tree\n")


@pytest.mark.parametrize(
    ("features", "entities", "message"),
    [
        ((FeatureRef("card_activity", 1, "n"),), None, "card_activity:1.n names no entity"),
        (
            (FeatureRef("card_activity", 1, "n", "card_id"), FeatureRef("card_activity", 1, "m", "merchant_id")),
            None,
            "keyed by both 'card_id' and 'merchant_id'",
        ),
        (FEATURES, ("merchant_id", "card_id"), "differ from the features' entities"),
    ],
)
def test_publish_refuses_features_that_do_not_name_their_views_entity(
    reg: ModelRegistry, features: tuple[FeatureRef, ...], entities: tuple[str, ...] | None, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        publish(reg, features=features, entities=entities)
    assert reg.latest("fraud") is None


def test_publish_refuses_an_unknown_flavor_and_task(reg: ModelRegistry) -> None:
    with pytest.raises(UnknownFlavorError, match=r"flavor 'onnx'.*known: lightgbm"):
        publish(reg, flavor="onnx")
    with pytest.raises(InvalidArgumentError, match="unknown task 'ranking'"):
        publish(reg, task="ranking")
    assert reg.latest("fraud") is None


def test_a_string_features_vocabulary_round_trips_through_the_store_and_the_event(
    reg: ModelRegistry, sink: InMemoryModelEventSink
) -> None:
    features = (*FEATURES, FeatureRef("card_activity", 1, "top_mcc_1h", "card_id"))
    vocab = Vocabulary("card_activity__top_mcc_1h", ("grocery", "fuel"), has_other=True)
    rec = publish(reg, features=features, vocabularies=[vocab])
    again = ModelRegistry.from_uri(reg.store.root).get("fraud", rec.version)  # from the stored JSON
    assert again.vocabularies == (vocab,) and again.vocabulary_of["card_activity__top_mcc_1h"] == vocab
    sent = ModelVersionRecord.from_proto(sink.events[0].published.version)
    assert sent.vocabularies == (vocab,)
    assert [vocab.code(v) for v in ("grocery", "fuel", "unseen")] == [0.0, 1.0, 2.0]  # other: the cap cut values


def test_publish_refuses_a_vocabulary_for_a_column_the_version_lacks(reg: ModelRegistry) -> None:
    with pytest.raises(InvalidArgumentError, match="not a feature of this version"):
        publish(reg, vocabularies=[Vocabulary("card_activity__nope", ("a",))])
    assert reg.latest("fraud") is None


def test_a_vocabulary_orders_by_count_then_value_and_caps_with_an_other_code() -> None:
    values = ["b", "a", "c", "a", "b", None, 3.0, "d"]
    capped = Vocabulary.build("v__f", values, max_categories=2)
    assert capped.values == ("a", "b") and capped.has_other
    assert [capped.code(v) for v in ("a", "b", "c", "zzz")] == [0.0, 1.0, 2.0, 2.0]
    assert math.isnan(capped.code(None))  # missing stays missing, other or not
    whole = Vocabulary.build("v__f", values, max_categories=10)
    assert whole.values == ("a", "b", "c", "d") and not whole.has_other
    assert math.isnan(whole.code("zzz")) and math.isnan(whole.code(None)) and math.isnan(whole.code(3.0))
