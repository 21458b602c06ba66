"""Started-process bookkeeping: `down` stops exactly what `up` started, and nothing else."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ManagedProcess", "StateFile", "pid_alive", "port_open", "spawn", "terminate"]


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid: int
    address: str
    # A token from the command line, checked before signalling so a recycled pid is never killed.
    marker: str


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_ours(proc: ManagedProcess) -> bool:
    return pid_alive(proc.pid) and proc.marker in _cmdline(proc.pid)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(args: list[str], log_path: Path, cwd: Path) -> int:
    """Start a detached process (own session, so it outlives `fti` and ignores its Ctrl-C)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - args are built by us, no shell
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True
        )
    return proc.pid


def terminate(proc: ManagedProcess, timeout_s: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout_s`. Returns False when the pid was not ours."""
    if not is_ours(proc):
        return False
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(proc.pid):
            return True
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    while pid_alive(proc.pid):
        time.sleep(0.1)
    return True


class StateFile:
    """`<stack_dir>/state.json`: the processes this stack started."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, ManagedProcess]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {name: ManagedProcess(**rec) for name, rec in raw.items()}

    def save(self, procs: dict[str, ManagedProcess]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: asdict(p) for n, p in procs.items()}, indent=2))
        tmp.replace(self.path)
