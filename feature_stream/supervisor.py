"""`fti features worker`: runs the Faust worker as a child process and rides out dependency outages.

The child exits with `EXIT_DEPENDENCY` when Redis, Kafka or the offline store stops answering
(see `feature_stream.faults`). The supervisor then probes that dependency with backoff and
starts a new child when it answers; the state the child saved makes the restart exact, as
after a `kill -9`. An outage longer than `outage_limit_s`, or any other failure, ends the
supervisor with a non-zero status and one line saying why. SIGTERM and SIGINT are passed on
to the child, which gets `stop_grace_s` to finish before it is killed.

A person's supervisor (systemd, Kubernetes, compose) restarts on a non-zero exit; this one
exists so that a two-minute Redis restart is not a crash loop in anyone's alerting.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from feature_stream.faults import EXIT_DEPENDENCY, EXIT_FAILED, EXIT_OK

__all__ = ["Backoff", "Supervisor", "child_argv"]

log = logging.getLogger("fti.worker")

Probe = Callable[[], str | None]  # None when every dependency answers, else what does not


@dataclass
class Backoff:
    first_s: float = 0.5
    most_s: float = 10.0
    factor: float = 2.0

    def delays(self) -> Sequence[float]:
        out, d = [], self.first_s
        while d < self.most_s:
            out.append(d)
            d *= self.factor
        return out


class Supervisor:
    def __init__(
        self,
        child_argv: Sequence[str],
        probe: Probe,
        *,
        outage_limit_s: float,
        stop_grace_s: float,
        healthy_after_s: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.child_argv = list(child_argv)
        self.probe = probe
        self.outage_limit_s = outage_limit_s
        self.stop_grace_s = stop_grace_s
        self.healthy_after_s = healthy_after_s
        self.backoff = backoff or Backoff()
        self.restarts = 0
        self._stopping = False
        self._child: subprocess.Popen[bytes] | None = None
        self._deadline: float | None = None  # when a child told to stop gets killed

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signal.SIGTERM)

    def _wait_child(self, child: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self._stopping and self._deadline is not None and time.monotonic() > self._deadline:
                    log.warning("worker did not stop within %.0f s of SIGTERM; killing it", self.stop_grace_s)
                    child.kill()
                elif self._stopping and self._deadline is None:
                    self._deadline = time.monotonic() + self.stop_grace_s

    def run(self) -> int:
        """Blocking: the exit status of `fti features worker`."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        outage_since: float | None = None
        pause: Iterator[float] = iter(())
        while True:
            self._deadline = None
            started = time.monotonic()
            self._child = subprocess.Popen(self.child_argv)  # noqa: S603 - our own interpreter and module
            code = self._wait_child(self._child)
            if self._stopping:
                return EXIT_OK if code in (EXIT_OK, -signal.SIGTERM, -signal.SIGKILL) else code
            if code != EXIT_DEPENDENCY:
                if code < 0 or code not in (EXIT_FAILED,):  # exit 1 has said why itself, on one line
                    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                    log.error("fti features worker: the worker process %s; not restarted", how)
                return code if code > 0 else EXIT_FAILED
            quick = time.monotonic() - started < self.healthy_after_s
            if outage_since is None or not quick:
                outage_since = time.monotonic()  # a new outage; a quick failure after a restart continues the last
                pause = iter(self.backoff.delays())
            if not self._wait_for_dependencies(outage_since):
                return EXIT_DEPENDENCY
            if quick and time.monotonic() - outage_since > self.outage_limit_s:
                log.error(
                    "fti features worker: giving up: the worker keeps stopping on a dependency fault for %.0f s "
                    "(limit FTI_WORKER_OUTAGE_LIMIT_S=%.0f); see its log above",
                    time.monotonic() - outage_since,
                    self.outage_limit_s,
                )
                return EXIT_DEPENDENCY
            if quick and not self._pause(next(pause, self.backoff.most_s)):  # answers, yet the worker fails again
                return EXIT_OK
            if self._stopping:
                return EXIT_OK
            self.restarts += 1
            log.warning(
                "fti features worker: dependencies answer again; restarting the worker (restart %d)", self.restarts
            )

    def _wait_for_dependencies(self, since: float) -> bool:
        """Probe with backoff until everything answers (True), or the outage outlasts its limit."""
        delays = list(self.backoff.delays())
        missing = self.probe()
        said = None
        while missing is not None:
            waited = time.monotonic() - since
            if waited > self.outage_limit_s:
                log.error(
                    "fti features worker: giving up: %s for %.0f s (limit FTI_WORKER_OUTAGE_LIMIT_S=%.0f)",
                    missing,
                    waited,
                    self.outage_limit_s,
                )
                return False
            if missing != said:
                log.warning(
                    "fti features worker: %s; retrying with backoff for up to %.0f s", missing, self.outage_limit_s
                )
                said = missing
            if not self._pause(delays.pop(0) if delays else self.backoff.most_s):
                return True
            missing = self.probe()
        return True

    def _pause(self, seconds: float) -> bool:
        """Sleep, waking for a stop request; False when stopping."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping:
            time.sleep(0.1)
        return not self._stopping


def child_argv(config: str | None) -> list[str]:
    """The command that runs one worker process (`feature_stream.worker_process`)."""
    argv = [sys.executable, "-m", "feature_stream.worker_process", "--parent", str(os.getpid())]
    return [*argv, "--config", config] if config else argv
