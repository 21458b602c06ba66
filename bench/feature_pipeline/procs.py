"""Child processes of the bench: CPU time and peak RSS of a process tree from /proc, and a loud stop
when one of them dies (Linux only; no psutil needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchAbort", "TreeUsage", "busy_s", "check_alive", "machine_cpu_s", "stop", "tree_rss", "tree_usage"]

_TICK = os.sysconf("SC_CLK_TCK")


class BenchAbort(SystemExit):
    """A process the bench started died: one clear line, non-zero status."""

    def __init__(self, line: str) -> None:
        print(f"bench stopped: {line}", file=sys.stderr, flush=True)
        super().__init__(2)


@dataclass(frozen=True, slots=True)
class TreeUsage:
    cpu_s: float  # user + system time of the live processes of the tree
    peak_rss_bytes: int  # the largest VmHWM among them (the worker process under its supervisor)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _status_bytes(pid: int, field: str) -> int:
    """A memory line of /proc/<pid>/status (`VmHWM`, `VmRSS`) in bytes; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_usage(root: int) -> TreeUsage:
    pids = _descendants(root)
    cpu = sum(st[1] for p in pids if (st := _stat(p)) is not None)
    return TreeUsage(cpu, max((_status_bytes(p, "VmHWM") for p in pids), default=0))


def tree_rss(root: int) -> int:
    """The largest resident set now (VmRSS) among the live processes of the tree, in bytes."""
    return max((_status_bytes(p, "VmRSS") for p in _descendants(root)), default=0)


def machine_cpu_s() -> float:
    """CPU seconds this machine's cores have spent busy since boot (`/proc/stat`: every state
    but idle and I/O wait; guest time is inside user time already)."""
    with open("/proc/stat") as fh:
        return busy_s(fh.readline())


def busy_s(cpu_line: str) -> float:
    """Busy seconds of `/proc/stat`'s first line (`cpu user nice system idle iowait irq softirq
    steal guest guest_nice`, in clock ticks): all but idle and I/O wait, guest being in user."""
    ticks = [int(x) for x in cpu_line.split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def check_alive(proc: subprocess.Popen[bytes], what: str, log: Path | None = None) -> None:
    """Raise `BenchAbort` when `proc` has exited (the bench never expects one of its processes to end)."""
    code = proc.poll()
    if code is not None:
        where = f"; its log: {log}" if log else ""
        raise BenchAbort(f"{what} (pid {proc.pid}) exited with status {code}{where}")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
