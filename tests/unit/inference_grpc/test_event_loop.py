"""`fti serve` runs on uvloop when installed, and on asyncio's loop without it."""

from __future__ import annotations

import asyncio
import sys

import click
import pytest

from inference_grpc.cli import run_event_loop


def _loop_module(choice: str) -> str:
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run_event_loop(main(), choice)  # type: ignore[arg-type]
    return seen[0]


def test_auto_uses_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert _loop_module("auto").startswith("uvloop")


def test_asyncio_is_used_when_asked_for() -> None:
    assert _loop_module("asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_insisting_on_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # any `import uvloop` now fails
    assert _loop_module("auto").startswith("asyncio")
    with pytest.raises(click.ClickException, match="uvloop is not installed"):
        _loop_module("uvloop")
