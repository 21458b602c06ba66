"""One worker process, as `fti features worker` starts it: `python -m feature_stream.worker_process`.

It dies with its supervisor (so a `kill -9` of `fti features worker` leaves no worker behind)
and exits with the status `feature_stream.faults` defines.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int | None) -> None:
    """SIGKILL this process when its supervisor dies (Linux), else poll the parent from a thread.

    `parent` is the supervisor's pid as it passed it: read here, `getppid()` would already name
    whoever adopted this process if the supervisor died while it started."""
    if parent is None:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except OSError:
        armed = False
    if os.getppid() != parent:  # the supervisor died before (or while) the signal was armed
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="fti-parent-watch", daemon=True).start()


def _own_log() -> None:
    """The worker's own lines (state changes, the minute summary) at INFO, whatever Faust's level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    own = logging.getLogger("fti.worker")
    own.addHandler(handler)
    own.setLevel(logging.INFO)
    own.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feature_stream.worker_process")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--parent", type=int, default=None, help="The supervisor's pid: die with it.")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    if args.parent is not None:
        from fti_core.settings import quiet_reports

        quiet_reports()  # the supervisor said its settings warnings once; each restart would repeat them
    _own_log()
    from feature_stream.app import run_worker
    from feature_stream.settings import FeatureStreamSettings
    from fti_core.settings import load_settings

    settings = load_settings(FeatureStreamSettings, config_file=args.config)
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
