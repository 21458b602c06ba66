"""A worker of this release started on what the earlier release left: worker state and archive
files in the JSON-text layouts. It goes on exactly (replays recognised, nothing counted twice),
rewrites the state it loads packed, and the archive reads the same in both layouts."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow.parquet as pq
import redis

from feature_stream.state import unpack_seen
from featurestore.archive_layout import archive_layout, typed_archive
from featurestore.offline import ARCHIVE_COLUMNS, ArchiveRow, OfflineStore, archive_frame
from fti_demo.simulate import SimConfig, generate

from ...legacy_archive import legacy_archive_table
from ...legacy_state import downgrade_state
from .conftest import FeaturePipeline


def _downgrade_archive(store: OfflineStore) -> int:
    """Rewrite every archive file in place in the JSON layout (what the earlier worker wrote)."""
    files = [f for t in store.archive_event_types() for f in store.archive_files(t)]
    for f in files:
        frame = archive_frame(typed_archive(store._read_file(f)))
        rows = [ArchiveRow(*r) for r in frame[list(ARCHIVE_COLUMNS)].itertuples(index=False)]
        pq.write_table(legacy_archive_table(rows), f)
    return len(files)


def test_a_worker_starts_on_json_layout_state_and_archive_and_stays_exact(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=2)
    sim = list(generate(6_000, SimConfig(seed=41)))
    first, second = sim[:3_500], sim[3_500:]
    worker = pipe.start_worker()
    pipe.produce((e.key, e.value) for e in first)
    pipe.wait_caught_up(timeout=180)
    pipe.kill(worker)

    client = redis.Redis.from_url(pipe.settings.redis_url.get_secret_value())
    prefix = pipe.settings.state_key_prefix
    assert downgrade_state(client, prefix) > 3_000
    store = OfflineStore(pipe.settings.offline_root)
    assert _downgrade_archive(store) > 0
    before = store.read_archive()

    # Replays of the first run's tail (a true duplicate now: another position) and new events.
    pipe.start_worker()
    pipe.produce((e.key, e.value) for e in [*first[-300:], *second])
    pipe.wait_caught_up(timeout=180)

    archive = store.read_archive()
    assert set(archive["event_id"]) == {e.event_id for e in sim}
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, s.mismatches[:10])
    # The earlier archive rows read the same beside the new typed files.
    kept = archive[archive["event_id"].isin(set(before["event_id"]))].reset_index(drop=True)
    assert kept[["event_id", "event_time_ms", "watermark_ms", "late"]].equals(
        before[["event_id", "event_time_ms", "watermark_ms", "late"]]
    )
    assert kept["values"].tolist() == before["values"].tolist()
    files = [f for t in store.archive_event_types() for f in store.archive_files(t)]
    assert {archive_layout(pq.read_schema(f)) for f in files} == {1, 2}
    # Every message key the second run saw holds packed state only.
    for key in {e.key.decode() for e in second if e.key}:
        raw = client.hgetall(f"{prefix}:in:{key}")
        assert raw and all(v[:1] == b"\x93" for v in raw.values()), key
        assert all(unpack_seen(v).position for v in raw.values())
