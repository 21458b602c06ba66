"""Hot swap under load, driven by real Kafka model events: no failed request, no going back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from featurestore.online import RedisOnlineStore
from fti.v1 import inference_pb2
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import UncheckedRegistry, artefact_path, publish_model, train_model_text
from .conftest import MODEL, ServerFactory, wait_until, write_features
from .load import Load, Sample

REQUEST = inference_pb2.PredictRequest(model=MODEL, entities={"card_id": "c1", "merchant_id": "m1"})


def _assert_never_older_than_already_seen(samples: list[Sample]) -> None:
    """A request sent after the client saw version N is answered by N or newer."""
    by_received = sorted(samples, key=lambda s: s.received)
    seen: list[tuple[float, int]] = []
    best = 0
    for s in by_received:
        best = max(best, s.version or 0)
        seen.append((s.received, best))
    for s in samples:
        floor = max((v for t, v in seen if t < s.sent), default=0)
        assert s.version is not None and s.version >= floor, f"sent at {s.sent}: v{s.version} after v{floor} was seen"


async def test_ten_alias_moves_under_load_fail_no_request(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore
) -> None:
    versions = [(await asyncio.to_thread(publish_model, publisher, MODEL, seed)).version for seed in range(1, 12)]
    await asyncio.to_thread(publisher.move_alias, MODEL, "production", versions[0], actor="test")
    write_features(feature_store, "c1", "m1")
    run = await serve()
    load = Load(run.stub, REQUEST, rate=250)
    load.start()
    await load.wait_for_answers(25, version=versions[0])
    delays = []
    for version in versions[1:]:
        moved = time.monotonic()
        await asyncio.to_thread(publisher.move_alias, MODEL, "production", version, actor="test")
        await wait_until(lambda v=version: _latest_is(load, v), what=f"v{version} to be served")  # type: ignore[misc]
        delays.append(time.monotonic() - moved)  # printed, never asserted
        # Each version serves a share of the load before the next move, whatever the machine's speed.
        await load.wait_for_answers(25, version=version)
    await load.stop()

    failed = [s for s in load.samples if s.code != "OK"]
    assert not failed, failed[:5]
    assert {s.version for s in load.samples} == set(versions)
    _assert_never_older_than_already_seen(load.samples)
    swapped = run.server.metrics.registry.get_sample_value(
        "fti_inference_model_swaps_total", {"model": MODEL, "outcome": "swapped"}
    )
    assert swapped == 11
    print(
        f"\n{len(load.samples)} requests at {load.achieved_rate():.0f}/s, 0 failed; alias move -> served: "
        f"median {sorted(delays)[len(delays) // 2] * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
    )


async def _latest_is(load: Load, version: int) -> bool:
    return load.latest_version() == version


async def test_tampered_artefact_is_refused_and_the_old_version_keeps_serving(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore
) -> None:
    v1 = await asyncio.to_thread(publish_model, publisher, MODEL, 1)
    v2 = await asyncio.to_thread(publish_model, publisher, MODEL, 2)
    v3 = await asyncio.to_thread(publish_model, publisher, MODEL, 3)
    await asyncio.to_thread(publisher.move_alias, MODEL, "production", v1.version, actor="test")
    write_features(feature_store, "c1", "m1")
    run = await serve()
    load = Load(run.stub, REQUEST, rate=100)
    load.start()

    await load.wait_for_answers(10, version=v1.version)

    root = run.server.settings.registry_root
    artefact_path(Path(root), v2).write_text(train_model_text(42))  # valid LightGBM, wrong bytes
    # Today's registry refuses that move; a registry written before the check, or edited by
    # hand, did not. The server must refuse it too.
    unchecked = UncheckedRegistry.over(publisher)
    await asyncio.to_thread(unchecked.move_alias, MODEL, "production", v2.version, actor="test")
    metrics = run.server.metrics.registry

    async def refused() -> bool:
        return metrics.get_sample_value("fti_inference_model_swaps_total", {"model": MODEL, "outcome": "refused"}) == 1

    await wait_until(refused, what="the tampered version to be refused")
    after_refusal = load.mark()
    answered = await load.wait_for_answers(25, after=after_refusal)
    assert {s.version for s in answered} == {v1.version}  # v1 kept serving

    await asyncio.to_thread(publisher.move_alias, MODEL, "production", v3.version, actor="test")
    await wait_until(lambda: _latest_is(load, v3.version), what="v3 after the refusal")
    await load.stop()
    assert {s.code for s in load.samples} == {"OK"}
    assert {s.version for s in load.samples} == {v1.version, v3.version}
