"""What counts as stale or missing, the start-up line that says so, and the gauge over recent requests."""

from __future__ import annotations

import logging

import pytest

from featurestore.online import OnlineValue
from inference_grpc.features import assemble, layout_for
from inference_grpc.freshness import FreshnessTracker, ViewFreshness, assess, describe

from .models_helper import ENTITIES, FEATURES

NOW = 1_800_000_000_000
DAY = 86_400_000


class _Gauge:
    def __init__(self) -> None:
        self.value: float | None = None

    def set(self, value: float) -> None:
        self.value = value


def _tiles(view: str, newest_ms: int, values: dict[str, float | None]) -> OnlineValue:
    """A value evaluated at read time (the tile layout): TTL 1 day."""
    return OnlineValue(view, 1, "k", newest_ms, NOW, 0, values, NOW, DAY)


def test_assess_weighs_views_by_their_features_and_an_empty_view_is_all_missing() -> None:
    card = ViewFreshness("card_activity", 1, 2, DAY, [NOW - 3 * DAY, NOW - 1000, NOW - 2 * DAY, NOW - 5])
    merchant = ViewFreshness("merchant_activity", 1, 1, DAY, [])
    assert card.dated(NOW) == 2
    assert assess([card], NOW) == 0.5
    assert assess([card, merchant], NOW) == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)
    assert assess([ViewFreshness("v", 1, 1, None, [NOW])], NOW) == 1.0  # no spec: no tiles to evaluate


def test_the_start_up_line_names_each_view_and_what_to_do() -> None:
    views = [
        ViewFreshness("card_activity", 1, 2, DAY, [NOW - 3 * DAY, NOW - 4 * DAY]),
        ViewFreshness("merchant_activity", 1, 1, DAY, []),
    ]
    line = describe("fraud", 7, views, NOW)
    assert line.startswith("model 'fraud' v7: 100% of its features are stale or missing")
    assert "card_activity:1: 2 of 2 sampled entities have no event within the view's TTL (1.0d)" in line
    assert "the newest event is 3.0d old" in line
    assert "merchant_activity:1: no entity in the online store" in line
    assert "What you see when features are stale" in line


def test_assembly_counts_dated_views_absent_values_and_no_state_but_not_request_values() -> None:
    layout = layout_for(FEATURES, ENTITIES)  # card: txn_count, amount_sum; merchant: txn_count
    fresh = _tiles("card_activity", NOW - 1000, {"txn_count": 2.0, "amount_sum": None})
    dated = _tiles("card_activity", NOW - 2 * DAY, {"txn_count": 0.0, "amount_sum": 0.0})
    merchant = _tiles("merchant_activity", NOW - 1000, {"txn_count": 1.0})
    no_state = _tiles("merchant_activity", -1, {"txn_count": 0.0})

    assert assemble(layout, [fresh, merchant], {}, NOW).stale_or_missing == 1  # amount_sum has no value
    got = assemble(layout, [dated, merchant], {}, NOW)
    assert got.stale_or_missing == 2 and got.vector[:2] == [0.0, 0.0]  # values kept: windows decide them
    assert assemble(layout, [fresh, no_state], {}, NOW).stale_or_missing == 2
    assert assemble(layout, [dated, None], {0: 5.0}, NOW).stale_or_missing == 2  # the request value counts not
    assert assemble(layout, [fresh, merchant], {1: 5.0}, NOW).stale_or_missing == 0


def test_the_tracker_keeps_the_share_over_the_last_requests_and_warns_on_crossing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gauge = _Gauge()
    tracker = FreshnessTracker(gauge, threshold=0.5, window=4)
    tracker.seed(1.0)
    assert gauge.value == 1.0
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            tracker.observe(0, 3)
        assert gauge.value == 0.0 and not caplog.records
        for _ in range(3):
            tracker.observe(3, 3)
    assert gauge.value == 0.75  # 9 of the last 12 features
    (record,) = caplog.records  # once, not once per request
    assert "75% of the served model's features were stale or missing over the last 4 requests" in record.getMessage()
    tracker.seed(0.0)  # requests have spoken: the start-up sample no longer shows
    assert gauge.value == 0.75
