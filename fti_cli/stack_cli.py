"""`fti stack up | down | status`."""

from __future__ import annotations

import sys

import click

from fti_cli.stack import ServiceStatus, StackError, StackManager, StackSettings
from fti_cli.stack.topics import ensure_topics
from fti_core.settings import load_settings

__all__ = ["stack"]


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _print(statuses: list[ServiceStatus]) -> None:
    for s in statuses:
        pid = f" (pid {s.pid})" if s.pid else ""
        click.echo(f"{s.name:6} {s.state:9} {s.address}{pid}")


@click.group()
def stack() -> None:
    """A local single-node Kafka (KRaft) and Redis for development and tests."""


@stack.command()
def up() -> None:
    """Start Kafka and Redis (if not running), wait until both answer, create the pipeline topics."""
    s = load_settings(StackSettings)
    try:
        statuses = StackManager(s, _say).up()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    _print(statuses)
    click.echo(f"FTI_KAFKA_BOOTSTRAP_SERVERS={s.kafka_bootstrap_servers}")
    host, port = s.redis_host_port
    click.echo(f"FTI_REDIS_URL=redis://{host}:{port}/0")


@stack.command()
def down() -> None:
    """Stop exactly the processes `fti stack up` started."""
    StackManager(load_settings(StackSettings), _say).down()


@stack.command()
def status() -> None:
    """Say what is up. Exits 1 when a service is stopped."""
    statuses = StackManager(load_settings(StackSettings), _say).status()
    _print(statuses)
    if any(s.state == "stopped" for s in statuses):
        sys.exit(1)


@stack.command()
def topics() -> None:
    """Create the pipeline topics with explicit partition counts on any broker (idempotent)."""
    s = load_settings(StackSettings)
    try:
        created = ensure_topics(s)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    for spec in s.topics.pipeline():
        state = "created" if spec.name in created else "exists"
        click.echo(f"{spec.name:24} {spec.partitions:3} partitions  {state}")
