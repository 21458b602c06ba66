"""The README's settings table is what the code declares, and its commands exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import click

from fti_cli.main import cli

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()


def _settings_reference():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("settings_reference", ROOT / "scripts" / "settings_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["settings_reference"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_settings_table_matches_the_settings_classes() -> None:
    ref = _settings_reference()
    assert ref.embedded(README) == ref.render(), "run: python scripts/settings_reference.py --write"


def test_every_fti_command_in_the_readme_exists() -> None:
    commands = set(re.findall(r"`?(fti(?: [a-z][a-z-]*)+)", README))
    assert len(commands) > 15
    for command in sorted(commands):
        words = command.split()[1:]
        node: click.Command = cli
        ctx = click.Context(cli)
        for word in words:
            if not isinstance(node, click.Group):
                break
            sub = node.get_command(ctx, word)
            assert sub is not None, f"README mentions `{command}`, but fti has no `{word}` there"
            node = sub
