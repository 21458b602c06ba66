"""The default cache bound: half the memory the worker may use, from its cgroup or the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_stream.app import _max_cached_events
from feature_stream.memory_budget import BYTES_PER_EVENT, available_memory, default_max_cached_events
from feature_stream.settings import FeatureStreamSettings
from fti_core.settings import load_settings

GB = 2**30


def _files(tmp_path: Path, **texts: str) -> tuple[Path, ...]:
    """The v2 and v1 limit files, each written when given, in a folder of their own."""
    folder = tmp_path / "-".join(sorted(texts) or ["none"])
    folder.mkdir()
    paths = []
    for name in ("v2", "v1"):
        p = folder / name
        if name in texts:
            p.write_text(texts[name] + "\n")
        paths.append(p)
    return tuple(paths)


def test_a_container_limit_is_what_the_worker_may_use(tmp_path: Path) -> None:
    got = available_memory(_files(tmp_path, v2=str(2 * GB)), physical=lambda: 24 * GB)
    assert got[0] == 2 * GB and "cgroup" in got[1]
    got = available_memory(_files(tmp_path, v1=str(3 * GB)), physical=lambda: 24 * GB)
    assert got[0] == 3 * GB


@pytest.mark.parametrize(
    "texts",
    [{}, {"v2": "max"}, {"v1": "9223372036854771712"}, {"v2": str(64 * GB)}],
    ids=["no-cgroup", "v2-max", "v1-unlimited", "over-the-machine"],
)
def test_without_a_limit_below_the_machine_it_is_the_machine(tmp_path: Path, texts: dict[str, str]) -> None:
    assert available_memory(_files(tmp_path, **texts), physical=lambda: 24 * GB) == (24 * GB, "the machine's memory")


def test_the_default_bound_is_half_the_memory_at_the_bytes_an_event_costs() -> None:
    assert default_max_cached_events(24 * GB) == 12 * GB // BYTES_PER_EVENT  # ~10.7M on this machine
    assert default_max_cached_events(2 * GB) == GB // BYTES_PER_EVENT  # ~0.9M in a 2 GB container
    assert default_max_cached_events(1) == 10_000  # never none at all


def test_the_setting_wins_over_the_default() -> None:
    settings = load_settings(FeatureStreamSettings, environ={"FTI_WORKER_MAX_CACHED_EVENTS": "123"})
    assert _max_cached_events(settings) == 123
    unset = load_settings(FeatureStreamSettings, environ={})
    assert _max_cached_events(unset) == default_max_cached_events(available_memory()[0])
