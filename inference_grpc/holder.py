"""The served model and its hot swap.

`ModelHolder.current` is one reference. A request reads it once and keeps using that model,
so a request in flight finishes on the version it started with. A swap loads the new version
aside (off the event loop), lets the source verify its SHA-256, warms it up, and only then
replaces the reference: one assignment, atomic for every coroutine on the loop.

Swaps are serialised by a lock, and every refresh asks the registry where the alias points
NOW rather than trusting the event that triggered it. A duplicate, late or out-of-order event
therefore changes nothing, and a missed event is caught by the next periodic refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fti_core.errors import FtiError

from .errors import ModelNotLoadedError
from .metrics import Metrics
from .model import LoadedModel, ModelSource, VersionRecord, load_model

__all__ = ["ModelHolder", "SwapOutcome"]

log = logging.getLogger(__name__)

SwapOutcome = str  # "swapped", "unchanged", "refused", "no_target"


class ModelHolder:
    def __init__(
        self,
        source: ModelSource,
        model: str,
        alias: str,
        *,
        metrics: Metrics,
        follow_latest: bool = False,
    ) -> None:
        self._source = source
        # follow_latest (`swap_on_publish`): serve the newest published version, ignoring the alias.
        self.follow_latest = follow_latest
        self.model = model
        self.alias = alias
        self._metrics = metrics
        self._on_change: Callable[[LoadedModel], Awaitable[None]] | None = None
        self._current: LoadedModel | None = None
        self._lock = asyncio.Lock()
        # (version, sha256) pairs already refused: a periodic refresh does not retry them,
        # an event does (the artefact may have been repaired).
        self._refused: set[tuple[int, str]] = set()
        self.last_swap_monotonic: float | None = None

    def set_on_change(self, callback: Callable[[LoadedModel], Awaitable[None]]) -> None:
        """Called after each successful swap (the server flips its health status there)."""
        self._on_change = callback

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def require(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ModelNotLoadedError(f"no version of model {self.model!r} is loaded yet (alias {self.alias!r})")
        return model

    async def refresh(self, *, reason: str, retry_refused: bool = True) -> SwapOutcome:
        """Serve the alias's current holder (or the newest version, when following every publish)."""
        async with self._lock:
            try:
                record = await asyncio.to_thread(self._target)
            except (FtiError, OSError, ValueError) as exc:
                log.warning("model %s: cannot resolve alias %r (%s): %s", self.model, self.alias, reason, exc)
                return "no_target"
            if record is None:
                log.info("model %s: alias %r has no version yet (%s)", self.model, self.alias, reason)
                return "no_target"
            current = self._current
            if current is not None and current.version == record.version:
                return "unchanged"
            if current is not None and self.follow_latest and record.version < current.version:
                return "unchanged"  # following every publish only ever moves forward
            key = (int(record.version), record.sha256)
            if key in self._refused and not retry_refused:
                return "refused"
            return await self._swap_to(record, key, reason)

    def _target(self) -> VersionRecord | None:
        if self.follow_latest:
            return self._source.latest(self.model)
        return self._source.resolve(self.model, self.alias)

    async def _swap_to(self, record: VersionRecord, key: tuple[int, str], reason: str) -> SwapOutcome:
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(load_model, self._source, record)
        except (FtiError, OSError, ValueError) as exc:
            # The current model keeps serving; the refusal is logged and counted.
            self._refused.add(key)
            self._metrics.swaps.labels(model=self.model, outcome="refused").inc()
            log.error("model %s: refused version %s (%s): %s", self.model, record.version, reason, exc)
            return "refused"
        old = self._current
        self._current = loaded
        self._refused.discard(key)
        self.last_swap_monotonic = time.monotonic()
        self._metrics.swaps.labels(model=self.model, outcome="swapped").inc()
        self._metrics.served_version.labels(model=self.model).set(loaded.version)
        self._metrics.swap_seconds.observe(time.perf_counter() - started)
        log.info(
            "model %s: now serving version %s (was %s; %s)",
            self.model,
            loaded.version,
            old.version if old else None,
            reason,
        )
        if self._on_change is not None:
            await self._on_change(loaded)
        return "swapped"
