"""Consumes model events and asks the holder to refresh; re-reads the registry periodically.

Each replica reads the model topic with its own consumer group (the event source's default),
so every replica sees every event. An event is only a hint: the holder re-resolves the alias
from the registry, the system of record, before swapping anything.
"""

from __future__ import annotations

import asyncio
import logging

from fti.v1 import models_pb2
from registry.events import ModelEventSource

from .holder import ModelHolder, SwapOutcome
from .metrics import Metrics

__all__ = ["ModelEventListener", "refresh_periodically"]

log = logging.getLogger(__name__)

_RETRY_S = 2.0


class ModelEventListener:
    def __init__(
        self,
        events: ModelEventSource,
        holder: ModelHolder,
        *,
        metrics: Metrics,
    ) -> None:
        self._events = events
        self._holder = holder
        self._metrics = metrics

    async def handle(self, event: models_pb2.ModelEvent) -> SwapOutcome | None:
        """Refresh when the event concerns the served model and alias; None when it does not."""
        kind = event.WhichOneof("kind") or "unknown"
        self._metrics.model_events.labels(kind=kind).inc()
        holder = self._holder
        if kind == "alias_moved":
            moved = event.alias_moved
            if moved.model == holder.model and moved.alias == holder.alias:
                return await holder.refresh(reason=f"alias moved to v{moved.to_version} (event {event.event_id})")
        elif kind == "published" and holder.follow_latest:
            published = event.published.version
            if published.model == holder.model:
                return await holder.refresh(reason=f"v{published.version} published (event {event.event_id})")
        return None

    async def run(self) -> None:
        """Consume until cancelled; a broken source is retried after a pause, never fatal."""
        while True:
            try:
                async for event in self._events:
                    await self.handle(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model event source failed; retrying in %.0fs", _RETRY_S)
                await asyncio.sleep(_RETRY_S)


async def refresh_periodically(holder: ModelHolder, interval_s: float) -> None:
    """Catch missed events (and a first version published after start) by re-reading the registry."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await holder.refresh(reason="periodic check", retry_refused=False)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic model refresh failed")
