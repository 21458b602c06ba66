"""Per-key dedup memory: ids are forgotten after the retention, scanning the key's ids rarely."""

from __future__ import annotations

from feature_stream.state import KeyState, Seen


def _state(times: list[int]) -> KeyState:
    st = KeyState(max_ms=max(times))
    for i, t in enumerate(times):
        st.seen[f"e{i}"] = st.added[f"e{i}"] = Seen(f"raw/0/{i}", t, -1)
    return st


def test_prune_forgets_ids_older_than_the_horizon_and_records_them_as_dropped() -> None:
    st = _state([100, 200, 300])
    st.take_changes()
    st.prune(250)
    assert set(st.seen) == {"e2"}
    assert st.take_changes().dropped == {"e0", "e1"}


def test_prune_with_every_ms_scans_only_once_the_horizon_has_moved_that_far() -> None:
    st = _state([100, 200, 300, 400])
    st.prune(150, every_ms=100)  # first scan
    assert set(st.seen) == {"e1", "e2", "e3"}
    st.prune(249, every_ms=100)  # moved 99: no scan, e1 (200) is kept a little longer
    assert "e1" in st.seen
    st.prune(250, every_ms=100)  # moved 100: scans again
    assert set(st.seen) == {"e2", "e3"}
    assert "e1" not in st.added and st.dropped == {"e0", "e1"}
