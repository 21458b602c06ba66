"""Training sets with filtered and derived features against a brute-force reference, in both point-in-time modes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from featurestore.definitions import FeatureViewDef, LabelDef
from featurestore.pit import LABEL_TIME, ViewEvents, join_point_in_time, labels_from_events

from .test_pit import HOUR, _by_entity, _events, _label_events

VIEW = FeatureViewDef.model_validate(
    {
        "name": "card",
        "version": 1,
        "source": "txn",
        "entity": "card_id",
        "ttl": "1d",
        "features": [
            {"name": "n", "agg": "count", "window": {"size": "1h"}},
            {"name": "pos_n", "agg": "count", "where": "a > 0", "window": {"size": "1h"}},
            {"name": "pos_sum", "agg": "sum", "field": "a", "where": "a > 0 and t >= 0", "window": {"size": "1h"}},
        ],
        "derived": [
            {"name": "pos_share", "expr": "pos_n / n"},
            {"name": "pos_mean", "expr": "pos_sum / pos_n"},
        ],
    }
)


def _reference(labels: pd.DataFrame, rows: pd.DataFrame, served: bool) -> np.ndarray:
    out = np.full((len(labels), 5), np.nan)
    for i, (ts, key) in enumerate(zip(labels[LABEL_TIME], labels["card_id"], strict=True)):
        t = int(ts.value // 1_000_000)
        mine = rows[(rows["entity_key"] == key) & (rows["time"] <= t) & (rows["time"] >= t // HOUR * HOUR)]
        if served:
            mine = mine[mine["ingest_ms"] <= t]
        pos = mine[mine["a"] > 0]["a"]
        n, pos_n, pos_sum = len(mine), len(pos), math.fsum(pos)
        out[i] = [n, pos_n, pos_sum, pos_n / n if n else np.nan, pos_sum / pos_n if pos_n else np.nan]
    return out


@pytest.mark.parametrize("served", [False, True])
def test_filtered_and_derived_columns_equal_a_brute_force_reference(served: bool) -> None:
    rng = np.random.default_rng(8)
    cards, merchants = [f"c{i}" for i in range(10)], ["m0"]
    rows = _events(rng, cards, 1200)
    label = LabelDef(name="is_fraud", event_type="fraud_label", entity="card_id", field="is_fraud")
    labels = labels_from_events(_label_events(rng, 150, cards, merchants, rows), label, ["card_id"], "binary")
    got, _ = join_point_in_time(labels, [ViewEvents(VIEW, _by_entity(rows))], as_served=served)
    names = ["card__n", "card__pos_n", "card__pos_sum", "card__pos_share", "card__pos_mean"]
    assert list(got.columns) == names
    want = _reference(labels, rows, served)
    np.testing.assert_array_equal(got[names].to_numpy(), want)
    assert np.isnan(want[:, 3]).any() and (~np.isnan(want[:, 3])).any()  # both a ratio and a 0 / 0
