"""Point-in-time join against an independent reference: never a value from after the label time, TTL honoured."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featurestore.definitions import FeatureViewDef, LabelDef
from trainer.errors import TrainingDataError
from trainer.pit import LABEL_TIME, ViewRows, _pair_keys, join_point_in_time, labels_from_events

T0 = 1_700_000_000_000
TTL_MS = 60_000


def _view(name: str, entity: str) -> FeatureViewDef:
    return FeatureViewDef.model_validate(
        {
            "name": name,
            "version": 1,
            "source": "txn",
            "entity": entity,
            "ttl": f"{TTL_MS}ms",
            "features": [
                {"name": "stamp", "agg": "last", "field": "t", "window": {"size": "1h"}},
                {"name": "amount", "agg": "sum", "field": "a", "window": {"size": "1h"}},
            ],
        }
    )


def _rows(rng: np.random.Generator, keys: list[str], n: int) -> pd.DataFrame:
    times = T0 + rng.integers(0, 600_000, size=n)
    # "stamp" is the row's own event time, so a leak from the future is detectable in the output.
    df = pd.DataFrame(
        {
            "entity_key": rng.choice(keys, size=n),
            "event_time": pd.to_datetime(times, unit="ms", utc=True).as_unit("ms"),
            "stamp": times.astype("float64"),
            "amount": rng.normal(size=n),
        }
    )
    return (
        df.drop_duplicates(["entity_key", "event_time"])
        .sort_values(["entity_key", "event_time"])
        .reset_index(drop=True)
    )


def _label_events(
    rng: np.random.Generator, n: int, cards: list[str], merchants: list[str], rows: pd.DataFrame
) -> pd.DataFrame:
    times = T0 + rng.integers(0, 700_000, size=n)
    # Some labels exactly at a feature row's time, to pin down the exact-match rule.
    exact = rows.sample(n=20, random_state=1)
    times[:20] = exact["stamp"].to_numpy().astype(np.int64)
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


def _reference(labels: pd.DataFrame, rows: pd.DataFrame, key_col: str, exact: bool) -> np.ndarray:
    """Brute force: for each label, the latest same-entity row at/before (or strictly before) its time, if fresh."""
    out = np.full((len(labels), 2), np.nan)
    for i, (t, key) in enumerate(zip(labels[LABEL_TIME], labels[key_col], strict=True)):
        if key is None or pd.isna(key):
            continue
        cand = rows[(rows["entity_key"] == key) & ((rows["event_time"] <= t) if exact else (rows["event_time"] < t))]
        if cand.empty:
            continue
        last = cand.iloc[-1]
        if (t - last["event_time"]) <= pd.Timedelta(milliseconds=TTL_MS):
            out[i] = [last["stamp"], last["amount"]]
    return out


@pytest.mark.parametrize("exact", [True, False])
def test_join_matches_reference_and_never_leaks(exact: bool) -> None:
    rng = np.random.default_rng(42)
    cards, merchants = [f"c{i}" for i in range(15)], [f"m{i}" for i in range(6)]
    card_rows, merchant_rows = _rows(rng, cards, 1500), _rows(rng, merchants, 800)
    label = LabelDef(name="is_fraud", event_type="fraud_label", entity="card_id", field="is_fraud")
    labels = labels_from_events(
        _label_events(rng, 400, cards, merchants, card_rows), label, ["card_id", "merchant_id"], "binary"
    )
    views = [ViewRows(_view("card", "card_id"), card_rows), ViewRows(_view("merchant", "merchant_id"), merchant_rows)]
    got, stats = join_point_in_time(labels, views, allow_exact_matches=exact)

    assert list(got.columns) == ["card__stamp", "card__amount", "merchant__stamp", "merchant__amount"]
    np.testing.assert_array_equal(
        got[["card__stamp", "card__amount"]].to_numpy(), _reference(labels, card_rows, "card_id", exact)
    )
    np.testing.assert_array_equal(
        got[["merchant__stamp", "merchant__amount"]].to_numpy(), _reference(labels, merchant_rows, "merchant_id", exact)
    )
    label_ms = labels[LABEL_TIME].astype("int64").to_numpy()
    for col in ("card__stamp", "merchant__stamp"):
        used = got[col].notna().to_numpy()
        stamps = got[col].to_numpy()[used]
        assert (stamps <= label_ms[used]).all()  # nothing from after the label time
        assert (label_ms[used] - stamps <= TTL_MS).all()  # nothing staler than the TTL
        if not exact:
            assert (stamps < label_ms[used]).all()
    assert stats.missing_entity["merchant_id"] == int(labels["merchant_id"].isna().sum()) > 0
    assert stats.stale["card"] > 0 and stats.matched["card"] > 0
    exact_hits = (got["card__stamp"].to_numpy()[:400] == label_ms).sum()
    assert (exact_hits > 0) if exact else (exact_hits == 0)


def test_same_as_pandas_merge_asof_by_key_with_exact_matches() -> None:
    rng = np.random.default_rng(7)
    rows = _rows(rng, ["a", "b", "c"], 300)
    label = LabelDef(name="y", event_type="l", entity="card_id", field="is_fraud")
    labels = labels_from_events(_label_events(rng, 200, ["a", "b", "c"], ["m"], rows), label, ["card_id"], "binary")
    got, _ = join_point_in_time(labels, [ViewRows(_view("card", "card_id"), rows)])
    ref = pd.merge_asof(
        labels.assign(_i=range(len(labels))).sort_values(LABEL_TIME),
        rows.rename(columns={"entity_key": "card_id"}).sort_values("event_time"),
        left_on=LABEL_TIME,
        right_on="event_time",
        by="card_id",
        allow_exact_matches=True,
    ).sort_values("_i")
    fresh = (ref[LABEL_TIME] - ref["event_time"]) <= pd.Timedelta(milliseconds=TTL_MS)
    np.testing.assert_array_equal(got["card__amount"].to_numpy(), ref["amount"].where(fresh).to_numpy())


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
    with pytest.raises(TrainingDataError, match="0/1"):
        labels_from_events(events, label, ["card_id"], "binary")
    out = labels_from_events(events, label, ["card_id"], "regression")
    assert list(out["event_id"]) == ["a", "c", "b"]


@pytest.mark.parametrize("spread", [600_000, 2**61])
def test_entity_time_keys_order_like_the_pairs_even_over_huge_time_ranges(spread: int) -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(-1, 50, size=2000)
    times = rng.integers(-spread, spread, size=2000, dtype=np.int64)
    times[::7] = times[0]  # ties on time, across and within entities
    keys = _pair_keys(codes, times)
    pairs = list(zip(codes.tolist(), times.tolist(), strict=True))
    by_pairs = sorted(range(2000), key=lambda i: (pairs[i], i))
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), by_pairs)
    same = keys[:, None] == keys[None, :]
    np.testing.assert_array_equal(same, (codes[:, None] == codes[None, :]) & (times[:, None] == times[None, :]))
