"""`fti train --model NAME [--snapshot ID] [--seed N]`."""

from __future__ import annotations

import json

import click

from fti_core.errors import FtiError
from fti_core.settings import load_settings
from trainer.settings import TrainerSettings

__all__ = ["train"]


@click.command()
@click.option("--model", "model", required=True, help="A model named in the definitions file.")
@click.option("--snapshot", "snapshot_id", default=None, help="Snapshot id (default: the latest snapshot).")
@click.option("--seed", type=int, default=None, help="LightGBM seed; same snapshot + seed -> same model bytes.")
@click.option("--no-events", is_flag=True, help="Do not emit VersionPublished on the model topic.")
@click.option("--json", "as_json", is_flag=True, help="Print the published version as JSON at the end.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def train(model: str, snapshot_id: str | None, seed: int | None, no_events: bool, as_json: bool, quiet: bool) -> None:
    """Train a LightGBM model on a snapshot and publish it to the registry with its lineage."""
    from trainer.pipeline import run_training

    settings = load_settings(TrainerSettings)

    def progress(msg: str) -> None:
        if not quiet:
            click.echo(f"[train] {msg}", err=True)

    try:
        events = None
        if settings.emit_events and not no_events:
            from registry.events import KafkaModelEventSink

            events = KafkaModelEventSink(settings)
        outcome = run_training(settings, model, snapshot_id=snapshot_id, seed=seed, events=events, progress=progress)
    except FtiError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    rec = outcome.record
    metrics = " ".join(f"{k}={v:.4f}" for k, v in rec.metrics.items())
    click.echo(f"{rec.model} v{rec.version} snapshot={rec.snapshot_id} {metrics}")
    if as_json:
        doc = {"model": rec.model, "version": rec.version, "sha256": rec.sha256, "metrics": dict(rec.metrics)}
        click.echo(json.dumps(doc | {"timings_s": outcome.timings_s}))
