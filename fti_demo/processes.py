"""The demo's child processes: each pipeline runs as its own `fti` process, as a user would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DemoStepError", "Processes"]


class DemoStepError(RuntimeError):
    """A demo step failed; the message says which and where its log is."""


class Processes:
    """Starts `fti` subcommands with one environment, logs each to a file, stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def _argv(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "fti_cli", *args]

    def run(self, name: str, args: list[str], timeout_s: float = 600) -> str:
        """Run a command to completion; its output is shown live (progress bars too) and kept in the log."""
        log = self.log_dir / f"{name}.log"
        chunks: list[bytes] = []
        with log.open("wb") as fh:
            proc = subprocess.Popen(  # noqa: S603 - our own CLI
                self._argv(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout_s
            while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
                fh.write(chunk)
                chunks.append(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                if time.monotonic() > deadline:
                    proc.kill()
                    raise DemoStepError(f"{name} took longer than {timeout_s:.0f} s (log: {log})")
            code = proc.wait()
        if code != 0:
            raise DemoStepError(f"`fti {' '.join(args)}` exited {code} (log: {log})")
        return b"".join(chunks).decode(errors="replace")

    def start(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self._running[name] = subprocess.Popen(  # noqa: S603 - our own CLI
            self._argv(args), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def check_alive(self) -> None:
        for name, proc in self._running.items():
            if proc.poll() is not None:
                raise DemoStepError(f"{name} exited with {proc.returncode} (log: {self.log_dir / name}.log)")

    def stop_all(self, grace_s: float = 20) -> None:
        for proc in self._running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self._running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._running.clear()
