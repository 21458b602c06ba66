"""`fti registry`: list, show, history, promote, rollback, and the long-running promoter."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import signal
from datetime import UTC, datetime

import click

from fti_core.errors import FtiError
from fti_core.settings import load_settings
from registry.models import ModelRegistry, ModelVersionRecord
from registry.models.settings import RegistrySettings

__all__ = ["registry"]


def _settings() -> RegistrySettings:
    return load_settings(RegistrySettings)


def _open(settings: RegistrySettings, *, with_events: bool) -> ModelRegistry:
    events = None
    if with_events:
        from registry.events import KafkaModelEventSink

        events = KafkaModelEventSink(settings)
    return ModelRegistry.from_uri(settings.registry_root, events=events)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _record_doc(rec: ModelVersionRecord, aliases: list[str]) -> dict[str, object]:
    return {
        "model": rec.model,
        "version": rec.version,
        "aliases": aliases,
        "created_at": _when(rec.created_at_ms),
        "task": rec.task,
        "label": dataclasses.asdict(rec.label) if rec.label else None,
        "metrics": dict(rec.metrics),
        "snapshot_id": rec.snapshot_id,
        "code_version": rec.code_version,
        "sha256": rec.sha256,
        "artefact_uri": rec.artefact_uri,
        "flavor": rec.flavor,
        "entities": list(rec.entities),
        # Which entity keys each view ("" for versions published by fti 0.1).
        "view_entities": {f"{f.view}:{f.view_version}": f.entity for f in rec.features},
        "features": [f"{f.view}:{f.view_version}/{f.feature}" for f in rec.features],
        # String features fed as categoricals: their vocabulary's size (a shared "other" code or not).
        "categoricals": {v.column: {"categories": len(v.values), "other": v.has_other} for v in rec.vocabularies},
        "params": dict(rec.params),
        "holdout_uri": rec.holdout_uri,
    }


class _Group(click.Group):
    """Turns the project's typed errors into one clean line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FtiError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(cls=_Group)
def registry() -> None:
    """Model registry: versions with lineage, aliases with history, promotion."""


@registry.command("list")
@click.argument("model", required=False)
def list_cmd(model: str | None) -> None:
    """Models with their latest version and aliases; with MODEL, its versions."""
    settings = _settings()
    reg = _open(settings, with_events=False)
    if model is None:
        for name in reg.models():
            latest = reg.latest(name)
            aliases = " ".join(f"{a}=v{v}" for a, v in sorted(reg.aliases(name).items()))
            click.echo(f"{name}\tlatest=v{latest.version if latest else '-'}\t{aliases}")
        return
    holders: dict[int, list[str]] = {}
    for alias, version in reg.aliases(model).items():
        holders.setdefault(version, []).append(alias)
    for rec in reg.versions(model):
        metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(rec.metrics.items()))
        tags = ",".join(sorted(holders.get(rec.version, [])))
        click.echo(f"v{rec.version}\t{_when(rec.created_at_ms)}\tsnapshot={rec.snapshot_id}\t{metrics}\t{tags}")


@registry.command()
@click.argument("model")
@click.argument("version", type=int, required=False)
@click.option("--alias", help="Show the version this alias points at.")
def show(model: str, version: int | None, alias: str | None) -> None:
    """A version's lineage and metrics as JSON (default: the latest version)."""
    reg = _open(_settings(), with_events=False)
    if alias is not None:
        rec = reg.resolve(model, alias)
        if rec is None:
            raise click.ClickException(f"{model}@{alias} has no holder")
    else:
        rec = reg.get(model, version) if version is not None else reg.latest(model)
        if rec is None:
            raise click.ClickException(f"model {model} has no versions")
    aliases = sorted(a for a, v in reg.aliases(model).items() if v == rec.version)
    click.echo(json.dumps(_record_doc(rec, aliases), indent=2))


@registry.command()
@click.argument("model")
@click.option("--alias", default="production", show_default=True)
@click.option("--at", "at", help="Only say which version held the alias at this ISO time or epoch ms.")
def history(model: str, alias: str, at: str | None) -> None:
    """Every move of an alias, oldest first, with who, why and the figures behind it."""
    reg = _open(_settings(), with_events=False)
    if at is not None:
        at_ms = int(at) if at.isdigit() else int(datetime.fromisoformat(at).timestamp() * 1000)
        holder = reg.alias_at(model, alias, at_ms)
        click.echo(f"{model}@{alias} at {_when(at_ms)}: {'v' + str(holder) if holder else 'no holder'}")
        return
    for m in reg.alias_history(model, alias):
        src = f"v{m.from_version}" if m.from_version else "-"
        evidence = " ".join(f"{k}={v:.4f}" for k, v in sorted(m.evidence.items()))
        click.echo(
            f"#{m.sequence}\t{_when(m.at_ms)}\t{m.kind}\t{src} -> v{m.to_version}\t{m.actor}\t{m.reason}\t{evidence}"
        )


@registry.command()
@click.argument("model")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="", help="Kept in the alias history.")
@click.option("--actor", default=None, help="Who moves it (default: the OS user).")
def promote(model: str, version: int, alias: str, reason: str, actor: str | None) -> None:
    """Point ALIAS at VERSION by hand (recorded and emitted as an alias move)."""
    reg = _open(_settings(), with_events=True)
    move = reg.move_alias(model, alias, version, kind="set", actor=actor or getpass.getuser(), reason=reason)
    click.echo(f"{model}@{alias}: v{move.from_version or '-'} -> v{move.to_version} (move #{move.sequence})")


@registry.command()
@click.argument("model")
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="", help="Kept in the alias history.")
@click.option("--actor", default=None, help="Who rolls back (default: the OS user).")
def rollback(model: str, alias: str, reason: str, actor: str | None) -> None:
    """Move ALIAS back to the version it pointed at before the current one."""
    reg = _open(_settings(), with_events=True)
    move = reg.rollback(model, alias, actor=actor or getpass.getuser(), reason=reason)
    click.echo(f"{model}@{alias}: rolled back v{move.from_version} -> v{move.to_version} (move #{move.sequence})")


@registry.command()
@click.option("--alias", default=None, help="Alias to promote to [FTI_PROMOTER_ALIAS, default production].")
@click.option("--metric", default=None, help="Metric to compare [FTI_PROMOTER_METRIC, default by task].")
@click.option("--margin", type=float, default=None, help="Required improvement [FTI_PROMOTER_MARGIN, default 0].")
@click.option("--model", "models", multiple=True, help="Only these models (repeatable); default all.")
@click.option("--from-beginning", is_flag=True, help="With a new consumer group, read the topic from its start.")
def promoter(
    alias: str | None, metric: str | None, margin: float | None, models: tuple[str, ...], from_beginning: bool
) -> None:
    """Long-running: promote newly published versions that beat the alias holder on the same held-out rows."""
    from registry.events import KafkaModelEventSource
    from registry.promotion import Promoter, PromotionPolicy

    settings = _settings()
    policy = PromotionPolicy(
        alias=alias or settings.alias,
        metric=metric or settings.metric,
        margin=settings.margin if margin is None else margin,
    )
    worker = Promoter(_open(settings, with_events=True), policy, actor=settings.actor, models=models)
    source = KafkaModelEventSource(settings, group_id=settings.group_id, from_beginning=from_beginning)
    what = f"metric {policy.metric or 'by task'}, margin {policy.margin}"
    click.echo(f"promoter: {settings.models_topic} -> alias {policy.alias} ({what})")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await worker.run(source, resync_s=settings.resync_interval_s)
        except asyncio.CancelledError:
            click.echo("promoter: stopping")
        finally:
            await source.close()

    asyncio.run(main())
