"""`fti` entry point. Subcommands live in their own packages and load lazily.

Lazy loading keeps `fti --help` fast and means a pipeline's heavy imports (Faust,
LightGBM, gRPC) are paid only by the subcommand that needs them.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from fti_core.errors import FtiError

__all__ = ["cli", "main"]

# name -> ("module:attribute", one-line help shown by `fti --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("fti_cli.stack_cli:stack", "Start, stop or inspect the local Kafka + Redis stack."),
    "features": ("feature_stream.cli:features", "Feature pipeline: streaming worker, backfill, verify, snapshots."),
    "simulate": ("fti_demo.simulate:simulate", "Produce realistic demo events (card transactions, fraud labels)."),
    "train": ("trainer.cli:train", "Train a LightGBM model on a snapshot and publish it to the registry."),
    "registry": ("registry.cli:registry", "Model registry: list, show, history, promote, rollback, promoter."),
    "serve": ("inference_grpc.cli:serve", "Serve predictions over gRPC with hot model swaps."),
    "predict": ("inference_grpc.cli:predict", "Call a running inference server from the command line."),
    "demo": ("fti_demo.run:demo", "Run the whole FTI loop end to end on this machine."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(cmd_name, target[1])
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table above so `fti --help` imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


def _unavailable(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=f"{help_text} (not available in this build)")
    def missing() -> None:
        raise click.ClickException(f"'fti {name}' is not available in this build")

    return missing


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="FTI_CONFIG",
    help="TOML settings file (FTI_ environment variables override it).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="fti-kafka")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: int) -> None:
    """Real-time feature / training / inference pipelines on Kafka, Redis, parquet, LightGBM and gRPC."""
    from fti_core.settings import CLICK_CONFIG_KEY  # here, not at the top: `fti --help` stays light

    # Subcommands' settings read the path from here (see fti_core.settings), not from os.environ.
    ctx.meta[CLICK_CONFIG_KEY] = config
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """`fti`: a failure the project foresaw (bad settings, a store that does not answer) is one
    line and exit 1, not a traceback; anything else keeps its traceback, because it is a bug."""
    try:
        cli(prog_name="fti")
    except FtiError as exc:
        click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
