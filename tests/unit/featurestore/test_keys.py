"""Composite entity keys: `join_key` / `split_key` round-trip any parts."""

from __future__ import annotations

import random

import pytest

from featurestore.keys import join_key, split_key

# Characters that stress the escaping, plus ordinary and non-ASCII ones.
_ALPHABET = ["|", "\\", "a", "b", " ", "z", "é", "7", "||", "\\|", "|\\"]


def _random_parts(rng: random.Random) -> list[str]:
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(1, 5))]


def test_join_and_split_round_trip_random_parts() -> None:
    rng = random.Random(14)
    for _ in range(5_000):
        parts = _random_parts(rng)
        assert split_key(join_key(parts)) == parts


def test_distinct_parts_give_distinct_keys() -> None:
    rng = random.Random(15)
    seen: dict[str, list[str]] = {}
    for _ in range(5_000):
        parts = _random_parts(rng)
        key = join_key(parts)
        assert seen.setdefault(key, parts) == parts


def test_known_encodings() -> None:
    assert join_key(["z1", "z2"]) == "z1|z2"
    assert join_key(["a|b", "c\\d"]) == "a\\|b|c\\\\d"
    assert join_key(["solo"]) == "solo"  # a single field's key is unchanged
    assert split_key("") == [""]
    assert split_key("a||b") == ["a", "", "b"]


@pytest.mark.parametrize("bad", ["a\\", "a\\b", "\\x|y"])
def test_split_refuses_bad_escapes(bad: str) -> None:
    with pytest.raises(ValueError, match="bad escape"):
        split_key(bad)


def test_join_refuses_a_plain_string_and_no_parts() -> None:
    with pytest.raises(TypeError):
        join_key("ab")
    with pytest.raises(ValueError, match="at least one part"):
        join_key([])
