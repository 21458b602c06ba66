"""An alias only moves to a loadable version: promote, rollback and the promoter refuse the rest.

"Corrupt" here means what an operator meets: the stored artefact's bytes changed on disk
after publishing (SHA-256 mismatch), a version published with bytes that are not a model,
a model whose feature count disagrees with its record, or an artefact that went missing.
In each case nothing is moved and nothing is emitted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from fti.v1 import models_pb2
from fti_core.errors import FtiError, IntegrityError, InvalidArgumentError, NotFoundError
from registry.events import InMemoryModelEventSink, new_event
from registry.models import FeatureRef, ModelRegistry, ModelVersionRecord
from registry.promotion import Promoter, PromotionPolicy

from ..inference_grpc.models_helper import train_model_text

FEATURES = (
    FeatureRef("card_activity", 1, "txn_count", "card_id"),
    FeatureRef("merchant_activity", 1, "txn_count", "merchant_id"),
)


@functools.cache
def _model(seed: int, n_features: int = len(FEATURES)) -> bytes:
    return train_model_text(seed, n_features=n_features).encode()


def _publish(reg: ModelRegistry, artefact: bytes) -> ModelVersionRecord:
    return reg.publish(
        "fraud",
        artefact,
        features=FEATURES,
        entities=("card_id", "merchant_id"),
        snapshot_id="snap",
        code_version="test",
        params={},
        metrics={"auc": 0.7},
        task="binary",
    )


@pytest.fixture
def sink() -> InMemoryModelEventSink:
    return InMemoryModelEventSink()


@pytest.fixture
def reg(tmp_path: Path, sink: InMemoryModelEventSink) -> ModelRegistry:
    return ModelRegistry.from_uri(str(tmp_path / "registry"), events=sink)


def _corrupt_on_disk(reg: ModelRegistry, record: ModelVersionRecord) -> None:
    path = Path(reg.store.root) / record.artefact_uri
    path.write_bytes(path.read_bytes()[:-40] + b"garbage")


def _missing_on_disk(reg: ModelRegistry, record: ModelVersionRecord) -> None:
    (Path(reg.store.root) / record.artefact_uri).unlink()


# (what is wrong, how to make a version like that, the error, a phrase of its message)
BROKEN: list[tuple[str, Callable[[ModelRegistry], ModelVersionRecord], type[FtiError], str]] = [
    (
        "bytes changed on disk",
        lambda reg: _then(_publish(reg, _model(2)), lambda rec: _corrupt_on_disk(reg, rec)),
        IntegrityError,
        "SHA-256 mismatch",
    ),
    ("not a model", lambda reg: _publish(reg, b"tree\nnot a model\n"), IntegrityError, "not a LightGBM text model"),
    ("wrong feature count", lambda reg: _publish(reg, _model(2, n_features=3)), InvalidArgumentError, "takes 3"),
    (
        "artefact missing",
        lambda reg: _then(_publish(reg, _model(2)), lambda rec: _missing_on_disk(reg, rec)),
        NotFoundError,
        "not moved",
    ),
]


def _then(record: ModelVersionRecord, action: Callable[[ModelVersionRecord], None]) -> ModelVersionRecord:
    action(record)
    return record


def _moves(sink: InMemoryModelEventSink) -> list[models_pb2.AliasMoved]:
    return [e.alias_moved for e in sink.events if e.WhichOneof("kind") == "alias_moved"]


@pytest.mark.parametrize(("what", "make", "error", "phrase"), BROKEN, ids=[b[0] for b in BROKEN])
def test_promote_to_a_broken_version_is_refused_nothing_moved_nothing_emitted(
    reg: ModelRegistry,
    sink: InMemoryModelEventSink,
    what: str,
    make: Callable[[ModelRegistry], ModelVersionRecord],
    error: type[FtiError],
    phrase: str,
) -> None:
    good = _publish(reg, _model(1))
    reg.move_alias("fraud", "production", good.version, actor="alice")
    broken = make(reg)
    events_before = list(sink.events)

    with pytest.raises(error, match=phrase) as raised:
        reg.move_alias("fraud", "production", broken.version, actor="bob")

    assert f"fraud@production not moved to v{broken.version}" in str(raised.value), what
    assert reg.aliases("fraud") == {"production": good.version}
    assert [m.to_version for m in reg.alias_history("fraud", "production")] == [good.version]
    assert sink.events == events_before  # nothing emitted


def test_rollback_to_a_corrupt_earlier_holder_is_refused_not_skipped(
    reg: ModelRegistry, sink: InMemoryModelEventSink
) -> None:
    v1, v2, v3 = (_publish(reg, _model(seed)) for seed in (1, 2, 3))
    for version in (v1.version, v2.version, v3.version):
        reg.move_alias("fraud", "production", version, actor="alice")
    _corrupt_on_disk(reg, v2)
    events_before = list(sink.events)

    with pytest.raises(IntegrityError, match="rollback refused") as raised:
        reg.rollback("fraud", "production", actor="carol")

    message = str(raised.value)
    assert f"not moved to v{v2.version}" in message and "fti registry promote fraud VERSION" in message
    assert reg.aliases("fraud") == {"production": v3.version}  # neither v2 nor (skipping it) v1
    assert len(reg.alias_history("fraud", "production")) == 3
    assert sink.events == events_before

    # Once the artefact is repaired the same rollback goes through.
    (Path(reg.store.root) / v2.artefact_uri).write_bytes(_model(2))
    assert reg.rollback("fraud", "production", actor="carol").to_version == v2.version


def test_a_good_version_still_moves_and_is_emitted(reg: ModelRegistry, sink: InMemoryModelEventSink) -> None:
    good = _publish(reg, _model(1))
    move = reg.move_alias("fraud", "staging", good.version, actor="alice")
    assert move.to_version == good.version
    assert [m.to_version for m in _moves(sink)] == [good.version]


def test_the_promoter_refuses_a_corrupt_candidate_and_records_no_verdict(
    reg: ModelRegistry, sink: InMemoryModelEventSink
) -> None:
    promoter = Promoter(reg, PromotionPolicy(alias="production"), actor="promoter")
    first = _publish(reg, _model(1))
    assert (decision := promoter.consider("fraud", first.version)) is not None and decision.promoted
    candidate = _publish(reg, b"tree\nnot a model\n")
    events_before = list(sink.events)

    with pytest.raises(IntegrityError, match="not a LightGBM text model"):
        promoter.consider("fraud", candidate.version)

    assert reg.aliases("fraud") == {"production": first.version}
    assert reg.decision("fraud", "production", candidate.version) is None
    assert sink.events == events_before


async def test_the_promoter_keeps_running_past_a_corrupt_candidate(
    reg: ModelRegistry, sink: InMemoryModelEventSink
) -> None:
    from registry.events import InMemoryModelEventSource

    promoter = Promoter(reg, PromotionPolicy(alias="production"), actor="promoter")
    bad = _publish(reg, b"tree\nnot a model\n")
    good = _publish(reg, _model(1))
    source = InMemoryModelEventSource()
    for record in (bad, good):
        source.put(new_event(published=models_pb2.VersionPublished(version=record.to_proto())))
    await source.close()  # the source ends after these two events

    await promoter.run(source)

    assert reg.aliases("fraud") == {"production": good.version}
    assert reg.decision("fraud", "production", bad.version) is None
