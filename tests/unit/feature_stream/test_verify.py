"""verify explains itself: mismatches grouped by cause, extra online state, the repair command."""

from __future__ import annotations

from feature_stream.aggregate import EntityState, Rec
from feature_stream.verify import (
    EXTRA_ONLINE,
    MISSING_ONLINE,
    NEWEST_DIFFERS,
    VALUE_DIFFERS,
    SkewReport,
    compare_view,
    probe_times,
)
from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef
from featurestore.online import InMemoryOnlineStore, OnlineKey

VIEW = FeatureViewDef.model_validate(
    {
        "name": "v",
        "version": 1,
        "source": "t",
        "entity": "k",
        "ttl": "1d",
        "features": [
            {"name": "n", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            {"name": "s", "agg": "sum", "field": "x", "window": {"size": "1h"}},
        ],
    }
)
T0 = 1_800_000_000_000
SKEW = 300_000


def _events(n: int, offset: int = 0) -> list[Rec]:
    return [Rec(T0 + i * 20_000, f"e{offset + i}", {"x": float(i)}) for i in range(n)]


def _online(per_entity: dict[str, list[Rec]]) -> InMemoryOnlineStore:
    store = InMemoryOnlineStore()
    store.register_views([VIEW])
    for entity, recs in per_entity.items():
        update = EntityState(VIEW).apply(recs, entity, SKEW)
        assert update.write is not None
        store.write_tiles([update.write])
    return store


def test_every_kind_of_divergence_is_named_and_the_repair_command_given() -> None:
    archive = {e: EntityEvents(events=_events(10)) for e in ("same", "behind", "not-online")}
    store = _online({"same": _events(10), "behind": _events(7), "ghost": _events(3, offset=100)})
    keys = ["same", "behind", "not-online", "ghost"]
    states = dict(zip(keys, store.read_state([OnlineKey("v", 1, k) for k in keys]), strict=True))
    skew = compare_view(VIEW, archive, states, SKEW, T0 + 86_400_000)
    assert set(skew.by_cause) == {NEWEST_DIFFERS, MISSING_ONLINE, EXTRA_ONLINE}
    assert not any(m.startswith("same") for m in skew.mismatches)
    report = SkewReport([skew]).render()
    assert "repair: fti features backfill --view v:1 --online" in report and "FAILED" in report

    exact = compare_view(VIEW, archive, {"same": states["same"]}, SKEW, T0 + 86_400_000)
    assert exact.mismatches == [] and exact.probes == len(probe_times(VIEW, archive["same"], SKEW, T0 + 86_400_000))
    assert VALUE_DIFFERS not in skew.by_cause


def test_probes_cover_the_newest_event_the_skew_before_it_and_long_after() -> None:
    events = EntityEvents(events=_events(30))
    newest = events.events[-1].time_ms
    probes = probe_times(VIEW, events, SKEW, T0 + 10 * 86_400_000)
    assert {newest - SKEW, newest, newest + 1, T0 + 10 * 86_400_000} <= set(probes)
    assert max(p for p in probes if p < T0 + 10 * 86_400_000) >= newest + 3_600_000  # every window has passed


STRINGS = FeatureViewDef.model_validate(
    {
        "name": "w",
        "version": 1,
        "source": "t",
        "entity": "k",
        "ttl": "1d",
        "features": [
            {"name": "last", "agg": "last_string", "field": "c", "window": {"size": "1h"}},
            {
                "name": "top",
                "agg": "most_frequent",
                "field": "c",
                "window": {"kind": "hopping", "size": "1h", "step": "5m"},
            },
        ],
    }
)


def test_string_features_compare_exactly_and_a_different_string_is_a_value_mismatch() -> None:
    recs = [Rec(T0 + i * 20_000, f"e{i}", {"c": "ab"[i % 3 == 0]}) for i in range(12)]
    store = InMemoryOnlineStore()
    store.register_views([STRINGS])
    for entity, written in (("same", recs), ("other", [*recs[:-1], Rec(recs[-1].time_ms, "e11", {"c": "z"})])):
        update = EntityState(STRINGS).apply(written, entity, SKEW)
        assert update.write is not None
        store.write_tiles([update.write])
    states = dict(
        zip(["same", "other"], store.read_state([OnlineKey("w", 1, "same"), OnlineKey("w", 1, "other")]), strict=True)
    )
    archive = {e: EntityEvents(events=recs) for e in states}
    skew = compare_view(STRINGS, archive, states, SKEW, T0 + 86_400_000)
    assert skew.probes > 0 and set(skew.by_cause) == {VALUE_DIFFERS}
    assert all(m.startswith("other") for m in skew.mismatches) and skew.by_feature["last"] > 0
    assert any("expected 'a', online 'z'" in m for m in skew.mismatches)
