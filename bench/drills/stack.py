"""The drills' own Kafka and Redis: `fti stack up` with a private FTI_STACK_DIR and free ports.

Killing a service is `kill -9` of the pid `fti stack up` recorded in `<stack dir>/state.json`
(after checking that pid is still that service); restarting it is `fti stack up` again, which
starts whatever of the two is stopped, exactly as an operator would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bench.drills.env import StackAddresses, free_port, stack_env
from fti_cli.stack.processes import StateFile, is_ours, pid_alive

__all__ = ["DrillError", "PrivateStack"]


class DrillError(RuntimeError):
    """A drill could not run or failed its bar; the message says why."""


def fti(args: list[str], env: dict[str, str], log: Path, timeout_s: float = 300) -> str:
    """Run one `fti` command to completion; its output goes to `log` and is returned."""
    with log.open("ab") as fh:
        fh.write(f"\n$ fti {' '.join(args)}\n".encode())
        fh.flush()
        done = subprocess.run(
            [sys.executable, "-m", "fti_cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
        fh.write(done.stdout)
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        tail = "\n    ".join(out.strip().splitlines()[-8:])
        raise DrillError(f"`fti {' '.join(args)}` exited {done.returncode} (log {log}):\n    {tail}")
    return out


class PrivateStack:
    """A Kafka and a Redis nobody else uses (or, for CI, the shared Kafka and a private Redis)."""

    def __init__(self, root: Path, shared_kafka: str | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.shared_kafka = shared_kafka is not None
        self.addr = StackAddresses(
            stack_dir=root / "stack",
            kafka=shared_kafka or f"localhost:{free_port()}",
            redis_port=free_port(),
            controller_port=free_port(),
        )
        self.env = stack_env(self.addr)
        self.log = root / "stack.log"
        self.topic_prefixes = [self.addr.topic_prefix]  # what the drills create, deleted on a shared broker

    def up(self) -> float:
        """Start whatever is stopped and wait until both answer; returns the seconds it took."""
        t0 = time.monotonic()
        fti(["stack", "up"], self.env, self.log)
        return time.monotonic() - t0

    def down(self) -> None:
        # Stops only what this stack's own state file lists: never the shared stack.
        if self.shared_kafka:
            self._delete_our_topics()
        fti(["stack", "down"], self.env, self.log)

    def _delete_our_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.addr.kafka})
        ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(tuple(self.topic_prefixes))]
        for fut in admin.delete_topics(ours).values() if ours else []:
            with contextlib.suppress(Exception):
                fut.result(timeout=30)

    def dead(self) -> list[str]:
        """Services this stack started that are no longer running (none after a drill restored them)."""
        procs = StateFile(self.addr.stack_dir / "state.json").load()
        return sorted(name for name, proc in procs.items() if not is_ours(proc))

    def kill(self, service: str) -> int:
        """`kill -9` of the service's process; returns its pid once it is gone."""
        proc = StateFile(self.addr.stack_dir / "state.json").load().get(service)
        if proc is None or not is_ours(proc):
            raise DrillError(f"{service} of the drills' stack is not running, nothing to kill")
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pid_alive(proc.pid):
            if time.monotonic() > deadline:
                raise DrillError(f"{service} (pid {proc.pid}) survived kill -9 for 30 s")
            time.sleep(0.05)
        return proc.pid
