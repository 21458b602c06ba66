"""`fti features ...`: worker, backfill, verify, compact, snapshot and training-set commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from feature_stream.settings import FeatureStreamSettings
from fti_core.settings import load_settings

__all__ = ["features"]


def _settings() -> FeatureStreamSettings:
    return load_settings(FeatureStreamSettings)


def _parse_time(text: str | None) -> int | None:
    """ISO-8601 (UTC when no zone) or epoch milliseconds."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


@click.group()
def features() -> None:
    """Feature pipeline: streaming worker, backfill, verify, compaction, snapshots."""


@features.command()
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Ride out Redis, Kafka and offline-store outages by restarting the worker process "
    "(--no-supervise: one process that exits 75 on an outage).",
)
def worker(supervise: bool) -> None:
    """Run the streaming worker (Faust) until stopped; exits non-zero when it cannot go on."""
    settings = _settings()
    config = click.get_current_context().find_root().params.get("config")
    if not supervise:
        from feature_stream.worker_process import main

        raise SystemExit(main(["--config", str(config)] if config else []))
    from feature_stream.probes import dependency_probe
    from feature_stream.supervisor import Supervisor, child_argv

    sup = Supervisor(
        child_argv(str(config) if config else None),
        dependency_probe(settings),
        outage_limit_s=settings.outage_limit_s,
        stop_grace_s=settings.stop_grace_s,
    )
    raise SystemExit(sup.run())


@features.command()
@click.option("--view", "view_ref", required=True, help="NAME:VERSION of the view to recompute.")
@click.option("--from", "from_", default=None, help="Earliest event time (ISO-8601 or epoch ms).")
@click.option("--to", default=None, help="Latest event time (ISO-8601 or epoch ms).")
@click.option("--online/--no-online", default=False, help="Also write the latest values to Redis.")
def backfill(view_ref: str, from_: str | None, to: str | None, online: bool) -> None:
    """Recompute a view from the raw archive and write its offline rows (and online values)."""
    from feature_stream.backfill import run_backfill

    result = run_backfill(_settings(), view_ref, _parse_time(from_), _parse_time(to), online=online, progress=True)
    click.echo(json.dumps(result, indent=1))


@features.command()
@click.option("--sample", default=200, show_default=True, help="Entities per view to recompute (0: all).")
@click.option("--view", "view_refs", multiple=True, help="NAME:VERSION; default all views in the definitions.")
@click.option("--seed", default=0, show_default=True)
def verify(sample: int, view_refs: tuple[str, ...], seed: int) -> None:
    """Recompute a sample of entities from the archive and compare with Redis and the offline rows."""
    from feature_stream.verify import run_verify

    report = run_verify(_settings(), list(view_refs) or None, sample=sample, seed=seed)
    click.echo(report.render())
    if report.mismatches:
        raise SystemExit(1)


@features.command("dead-letter")
@click.option("--topic", default=None, help="Topic of the message; default the raw events topic.")
@click.option("--partition", type=int, required=True)
@click.option("--offset", type=int, required=True)
@click.option("--reason", required=True, help="Why, for whoever reads the dead-letter topic.")
def dead_letter(topic: str | None, partition: int, offset: int, reason: str) -> None:
    """Dead-letter one message by hand, for what nothing foresaw (a message that stops every worker).

    Workers read the list when they are next assigned partitions (also when they restart) and
    every 10 s, and send that message to the dead-letter topic (reason MANUAL) instead of
    processing it."""
    import redis
    from confluent_kafka import Consumer, TopicPartition

    from feature_stream.skips import add_skip, position

    if not reason.strip():
        raise click.BadParameter("say why: whoever reads the dead-letter topic needs it", param_hint="--reason")
    settings = _settings()
    topic = topic or settings.events_topic
    where = position(topic, partition, offset)
    # Reading the workers' committed offset needs their group id; nothing is committed for it here.
    conf = {**settings.confluent_config(), "group.id": settings.app_id, "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        done = consumer.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
        consumer.assign([TopicPartition(topic, partition, offset)])
        msg = consumer.poll(10.0)
    finally:
        consumer.close()
    if msg is None or msg.error() is not None or msg.offset() != offset:
        raise click.ClickException(f"no message at {where}")
    if done is not None and done > offset:
        raise click.ClickException(
            f"{where} is already processed (group {settings.app_id} committed offset {done}): "
            "dead-lettering it now would change nothing"
        )
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10)
    add_skip(client, settings.state_key_prefix, where, reason)
    click.echo(json.dumps({"dead_lettered": where, "reason": reason, "bytes": len(msg.value() or b"")}))


@features.command()
@click.option(
    "--min-files", default=16, show_default=True, help="Compact a partition directory holding at least this many files."
)
def compact(min_files: int) -> None:
    """Merge each offline partition's small files into one (safe while workers and readers run).

    The worker writes a few files per partition every flush (0.5 s); run this periodically
    (one at a time) to keep listings and reads fast. Reads return the same rows before and after.
    Archive partitions holding files of the earlier JSON-text layout are rewritten typed
    whatever their number of files."""
    from tqdm import tqdm

    from featurestore.archive_layout import ARCHIVE_LAYOUT
    from featurestore.offline import OfflineStore

    store = OfflineStore(_settings().offline_root)
    due = {
        d: files
        for d, files in store.partitions().items()
        if len(files) >= max(2, min_files) or (d.startswith("archive/") and store.legacy_archive(files))
    }
    done = [store.compact(d, files) for d, files in tqdm(sorted(due.items()), desc="compacting", unit="partition")]
    summary = {
        "stale_tmp_files_removed": store.clean_tmp(),
        "partitions": len(done),
        "files_before": sum(c.files for c in done),
        "rows_before": sum(c.rows_before for c in done),
        "rows_after": sum(c.rows_after for c in done),
        "archive_layout": ARCHIVE_LAYOUT,
    }
    click.echo(json.dumps(summary, indent=1))


@features.group()
def snapshot() -> None:
    """Create and inspect offline-store snapshots (what the trainer reads)."""


@snapshot.command("create")
@click.option("--upto", default=None, help="Latest event time to include (ISO-8601 or epoch ms).")
def snapshot_create(upto: str | None) -> None:
    """Freeze the offline store as it is now (immutable, hashed copies); prints the snapshot id."""
    from featurestore.snapshots import SnapshotStore

    snap = SnapshotStore(_settings().offline_root).create(upto_ms=_parse_time(upto))
    click.echo(snap.id)


@snapshot.command("list")
def snapshot_list() -> None:
    """One line per snapshot: id, rows, views."""
    from featurestore.snapshots import SnapshotStore

    for s in SnapshotStore(_settings().offline_root).list():
        rows = sum(f.rows for f in s.files)
        views = ",".join(v.ref for v in s.views)
        click.echo(f"{s.id}\t{rows} rows\t{views}")


@snapshot.command("show")
@click.argument("snapshot_id")
def snapshot_show(snapshot_id: str) -> None:
    """A snapshot's manifest: its files, their hashes and row counts, and the views it holds."""
    from featurestore.snapshots import SnapshotStore

    snap = SnapshotStore(_settings().offline_root).get(snapshot_id)
    click.echo(json.dumps(snap.to_json(), indent=1))


@features.command("training-set")
@click.option("--model", required=True, help="A model of the definitions: its label and its feature set.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Parquet file.")
@click.option(
    "--as-of",
    type=click.Choice(["event_time", "served"]),
    default="event_time",
    show_default=True,
    help="event_time: every accepted event stamped by the label's time; served: only those ingested by then.",
)
@click.option("--snapshot", default="latest", show_default=True, help="Snapshot id, latest, or live (the archive now).")
def training_set(model: str, out: Path, as_of: str, snapshot: str) -> None:
    """Export a model's point-in-time training set (the rows `fti train` builds) as parquet, atomically."""
    from featurestore.sdk import FeatureStore
    from featurestore.sdk.export import export_training_set

    store = FeatureStore.from_settings(_settings())
    written = export_training_set(store, model, out, as_of="served" if as_of == "served" else "event_time",
                                  snapshot=snapshot)  # fmt: skip
    click.echo(json.dumps(written.to_json(), indent=1))
