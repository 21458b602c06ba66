"""What stopped a worker, and the exit status that tells its supervisor.

A dependency fault (Redis, Kafka or the offline store not answering or refusing writes) is
ridden out: the worker exits with `EXIT_DEPENDENCY`, its supervisor waits until the dependency
answers and starts it again, and the state it had saved makes the restart exact. Anything
else (a bug, bad definitions) is not retried: `EXIT_FAILED`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import redis

from fti_core.errors import UnavailableError

__all__ = ["EXIT_DEPENDENCY", "EXIT_FAILED", "EXIT_OK", "Fault", "classify"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DEPENDENCY = 75  # EX_TEMPFAIL (sysexits.h): try again later

# A disk that is full, read-only or failing. Other OS errors count only when an adapter says
# they came from a store (UnavailableError): a missing definitions file is no outage.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT}


@dataclass(frozen=True)
class Fault:
    """Why a worker stopped: `dependency` is None when nothing outside the worker is to blame."""

    dependency: str | None
    detail: str

    @property
    def exit_code(self) -> int:
        return EXIT_DEPENDENCY if self.dependency else EXIT_FAILED

    def line(self) -> str:
        """The one line a person reads first."""
        if self.dependency:
            return f"{self.dependency} unavailable: {self.detail}"
        return f"failed: {self.detail}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _dependency_of(exc: BaseException) -> str | None:
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError | redis.ReadOnlyError):
        return "redis"
    module = type(exc).__module__
    if module.startswith(("aiokafka", "kafka", "confluent_kafka")):
        return "kafka"
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return "offline store"
    return None


# What the adapters' UnavailableError messages name, and the dependency behind it.
_NAMED = (
    ("redis", "redis"),
    ("state ", "redis"),
    ("online store", "redis"),
    ("offline", "offline store"),
    ("kafka", "kafka"),
    ("produce to", "kafka"),
    ("topic", "kafka"),
)


def _named_in(message: str) -> str:
    text = message.lower()
    return next((dependency for word, dependency in _NAMED if word in text), "a dependency")


def classify(exc: BaseException) -> Fault:
    """The dependency an exception (or anything in its cause chain) blames, if any."""
    chain = _chain(exc)
    for e in chain:
        dependency = _dependency_of(e)
        if dependency:
            return Fault(dependency, f"{type(exc).__name__}: {exc}")
    for e in chain:
        if isinstance(e, UnavailableError):
            return Fault(_named_in(str(e)), f"{type(exc).__name__}: {exc}")
    return Fault(None, f"{type(exc).__name__}: {exc}")
