"""Point-in-time training sets against an independent reference: each view read at the label time, never later."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef, LabelDef
from featurestore.pit import LABEL_TIME, PointInTimeError, ViewEvents, join_point_in_time, labels_from_events
from featurestore.tiles import Event

T0 = 1_700_000_000_000
HOUR = 3_600_000


def _view(name: str, entity: str) -> FeatureViewDef:
    return FeatureViewDef.model_validate(
        {
            "name": name,
            "version": 1,
            "source": "txn",
            "entity": entity,
            "ttl": "1d",
            "features": [
                {"name": "stamp", "agg": "last", "field": "t", "window": {"size": "1h"}},
                {
                    "name": "amount",
                    "agg": "sum",
                    "field": "a",
                    "window": {"kind": "hopping", "size": "1h", "step": "10m"},
                },
                {"name": "n", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            ],
        }
    )


def _events(rng: np.random.Generator, keys: list[str], n: int) -> pd.DataFrame:
    times = T0 + rng.integers(0, 3 * HOUR, size=n)
    # "t" is the event's own time, so a leak from after the label is detectable in the output.
    return pd.DataFrame(
        {
            "entity_key": rng.choice(keys, size=n),
            "event_id": [f"x{i:05d}" for i in range(n)],
            "time": times,
            "t": times.astype("float64"),
            "a": rng.normal(size=n),
            "ingest_ms": times + rng.integers(0, HOUR, size=n),  # archived up to an hour after its time
        }
    )


def _by_entity(df: pd.DataFrame) -> dict[str, EntityEvents]:
    out: dict[str, EntityEvents] = {}
    for r in df.sort_values(["time", "event_id"]).itertuples(index=False):
        got = out.setdefault(str(r.entity_key), EntityEvents())
        got.events.append(Event(int(r.time), str(r.event_id), {"t": float(r.t), "a": float(r.a)}))
        got.ingest_ns.append(int(r.ingest_ms) * 1_000_000)
    return out


def _label_events(
    rng: np.random.Generator, n: int, cards: list[str], merchants: list[str], rows: pd.DataFrame
) -> pd.DataFrame:
    times = T0 + rng.integers(0, 4 * HOUR, size=n)
    exact = rows.sample(n=20, random_state=1)  # some labels exactly at an event's time: the end is closed
    times[:20] = exact["time"].to_numpy()
    card = rng.choice(cards, size=n)
    card[:20] = exact["entity_key"].to_numpy()
    entities = [{"card_id": c, "merchant_id": m} for c, m in zip(card, rng.choice(merchants, size=n), strict=True)]
    for i in range(0, n, 17):
        del entities[i]["merchant_id"]  # some labels lack an entity kind
    return pd.DataFrame(
        {
            "event_id": [f"e{i:04d}" for i in range(n)],
            "event_type": "fraud_label",
            "event_time": pd.to_datetime(times, unit="ms", utc=True).as_unit("ms"),
            "entities": entities,
            "values": [{"is_fraud": bool(x)} for x in rng.integers(0, 2, size=n)],
            "late": False,
        }
    )


def _reference(labels: pd.DataFrame, rows: pd.DataFrame, key_col: str, shift: int, served: bool) -> np.ndarray:
    """Brute force over the raw events: each window by its bounds, read at the label time."""
    out = np.full((len(labels), 3), np.nan)
    for i, (ts, key) in enumerate(zip(labels[LABEL_TIME], labels[key_col], strict=True)):
        if key is None or pd.isna(key):
            continue
        t = int(ts.value // 1_000_000) - shift
        mine = rows[(rows["entity_key"] == key) & (rows["time"] <= t)]
        if served:
            mine = mine[mine["ingest_ms"] <= t]
        hour = mine[mine["time"] >= t // HOUR * HOUR].sort_values(["time", "event_id"])
        amount = mine[mine["time"] >= t // 600_000 * 600_000 - HOUR + 600_000]
        count = mine[mine["time"] >= t // 60_000 * 60_000 - 600_000 + 60_000]
        out[i] = [hour["t"].iloc[-1] if len(hour) else np.nan, math.fsum(amount["a"]), len(count)]
    return out


@pytest.mark.parametrize(("exact", "served"), [(True, False), (False, False), (True, True)])
def test_join_matches_reference_and_never_leaks(exact: bool, served: bool) -> None:
    rng = np.random.default_rng(42)
    cards, merchants = [f"c{i}" for i in range(15)], [f"m{i}" for i in range(6)]
    card_rows, merchant_rows = _events(rng, cards, 1500), _events(rng, merchants, 800)
    label = LabelDef(name="is_fraud", event_type="fraud_label", entity="card_id", field="is_fraud")
    labels = labels_from_events(
        _label_events(rng, 200, cards, merchants, card_rows), label, ["card_id", "merchant_id"], "binary"
    )
    views = [
        ViewEvents(_view("card", "card_id"), _by_entity(card_rows)),
        ViewEvents(_view("merchant", "merchant_id"), _by_entity(merchant_rows)),
    ]
    got, stats = join_point_in_time(labels, views, allow_exact_matches=exact, as_served=served)

    assert list(got.columns)[:3] == ["card__stamp", "card__amount", "card__n"]
    shift = 0 if exact else 1
    card_cols = ["card__stamp", "card__amount", "card__n"]
    merchant_cols = ["merchant__stamp", "merchant__amount", "merchant__n"]
    np.testing.assert_array_equal(got[card_cols].to_numpy(), _reference(labels, card_rows, "card_id", shift, served))
    np.testing.assert_array_equal(
        got[merchant_cols].to_numpy(), _reference(labels, merchant_rows, "merchant_id", shift, served)
    )
    label_ms = labels[LABEL_TIME].astype("int64").to_numpy()
    used = got["card__stamp"].notna().to_numpy()
    assert (got["card__stamp"].to_numpy()[used] <= label_ms[used] - shift).all()  # nothing after the label
    assert stats.missing_entity["merchant_id"] == int(labels["merchant_id"].isna().sum()) > 0
    assert stats.matched["card"] > 0
    exact_hits = (got["card__stamp"].to_numpy() == label_ms).sum()
    if not served:  # an event stamped at T was archived after T: only "as of event time" sees it
        assert (exact_hits > 0) if exact else (exact_hits == 0)
    # Counts decay: labels long after an entity's events read 0, not the count as of its last event.
    assert (got["card__n"] == 0).sum() > 0 and got["card__n"].notna().sum() == int(labels["card_id"].notna().sum())


def test_labels_need_binary_targets_and_are_ordered() -> None:
    label = LabelDef(name="y", event_type="l", entity="card_id", field="y")
    events = pd.DataFrame(
        {
            "event_id": ["b", "a", "c"],
            "event_time": pd.to_datetime([2, 1, 1], unit="ms", utc=True),
            "entities": [{"card_id": "x"}] * 3,
            "values": [{"y": 1}, {"y": 0}, {"y": 2}],
        }
    )
    with pytest.raises(PointInTimeError, match="0/1"):
        labels_from_events(events, label, ["card_id"], "binary")
    out = labels_from_events(events, label, ["card_id"], "regression")
    assert list(out["event_id"]) == ["a", "c", "b"]
