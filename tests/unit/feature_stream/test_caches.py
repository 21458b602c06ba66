"""The LRU eviction shared by the worker's caches: by entries and by what they hold."""

from __future__ import annotations

from feature_stream.caches import evict_lru, touch


def test_evicts_oldest_entries_beyond_the_limit_never_a_kept_one() -> None:
    cache = {k: [k] for k in "abcdef"}
    touch(cache, ["a"])  # now most recently used
    assert evict_lru(cache, 3, keep={"b"}) == 0  # nothing held is counted without a size
    assert list(cache) == ["b", "f", "a"]


def test_evicts_oldest_entries_until_what_they_hold_is_within_the_bound() -> None:
    cache = {"a": [1] * 5, "b": [1] * 1, "c": [1] * 7, "d": [1] * 2}
    held = sum(map(len, cache.values()))  # 15
    dropped = evict_lru(cache, 10, keep={"a"}, held=held, most_held=8, size=len)
    assert dropped == 8 and list(cache) == ["a", "d"]  # b, then c: 15 - 8 = 7 <= 8
    assert evict_lru(cache, 10, keep=set(), held=7, most_held=8, size=len) == 0


def test_an_entry_bigger_than_the_bound_is_evicted_unless_kept() -> None:
    cache = {"big": [1] * 20, "x": [1]}
    assert evict_lru(cache, None, keep={"big"}, held=21, most_held=10, size=len) == 1  # no entry bound
    assert list(cache) == ["big"]  # unsaved: stays, over the bound until saved
    assert evict_lru(cache, None, keep=set(), held=20, most_held=10, size=len) == 20
    assert cache == {}
