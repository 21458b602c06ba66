"""What every drill shares: its processes (watched for unexpected deaths), waits and its report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.drills.stack import DrillError

__all__ = ["DrillResult", "Processes", "gone", "pid_of_child", "wait_for"]


class Processes:
    """Long-running `fti` processes of one drill, each logged to a file.

    `check()` raises when one of them exited without the drill asking it to: every wait of a
    drill calls it, so a process that dies unexpectedly fails the drill at once.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.expected_exit: set[str] = set()

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "fti_cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        self.expected_exit.discard(name)
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill9(self, name: str) -> None:
        """`kill -9` of one of our processes (a drill's fault, so its exit is expected)."""
        proc = self.procs[name]
        self.expected_exit.add(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.expected_exit and proc.poll() is not None:
                tail = "\n    ".join(self.log(name).strip().splitlines()[-15:])
                raise DrillError(f"{name} exited unexpectedly with status {proc.returncode}:\n    {tail}")

    def stop_all(self, grace_s: float = 40) -> dict[str, int | None]:
        """SIGTERM each process we started, SIGKILL after `grace_s`; returns the exit statuses."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.expected_exit.add(name)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None  # did not honour SIGTERM
                proc.wait()
        return codes


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float, procs: Processes | None = None) -> float:
    """Poll `cond` until true, checking our processes meanwhile; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if procs is not None:
            procs.check()
        if time.monotonic() - t0 > timeout_s:
            raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)
    return time.monotonic() - t0


@dataclass
class DrillResult:
    """One drill's figures, its bar's failures, and a printable summary."""

    name: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def bar(self, condition: bool, failure: str) -> None:
        """Record `failure` when `condition` does not hold."""
        if not condition:
            self.failures.append(failure)

    def summary(self) -> dict[str, Any]:
        return {
            "drill": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            **self.figures,
            "failures": self.failures,
            "notes": self.notes,
        }

    def render(self) -> str:
        lines = [f"== drill {self.name}: {self.title}"]
        lines += [f"   note: {n}" for n in self.notes]
        lines += [f"   {k:34} {json.dumps(v)}" for k, v in self.figures.items()]
        lines += [f"   FAILED: {f}" for f in self.failures]
        lines.append(f"   {'PASSED' if self.ok else 'FAILED'} in {self.seconds:.0f} s")
        lines.append("   JSON " + json.dumps(self.summary(), sort_keys=False))
        return "\n".join(lines)


def pid_of_child(pid: int) -> list[int]:
    """Children of `pid` (the worker process under `fti features worker`)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
