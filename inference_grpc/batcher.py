"""One LightGBM call for all the rows scored in the same event-loop turn.

`Booster.predict` costs about 50 µs of Python and ctypes overhead per call and only a few
microseconds per row, so scoring one row per request made prediction the largest single
cost of a request under load. Requests whose Redis read completed together (they share a
round trip, see `coalesce.py`) resume in the same turn; each hands its rows here, and one
callback scheduled with `call_soon` scores them all at once, grouped by model, so a request
that started before a swap is still scored by the version it started with. At low load the
only cost is that `call_soon`. Rows are scored independently, so a score does not depend on
which other rows shared its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .model import LoadedModel

__all__ = ["PredictBatcher"]

_Waiter = tuple[LoadedModel, Sequence[Sequence[float]], "asyncio.Future[list[float]]"]


class PredictBatcher:
    def __init__(self) -> None:
        self._pending: list[_Waiter] = []

    async def score(self, model: LoadedModel, rows: Sequence[Sequence[float]]) -> list[float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[float]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((model, rows, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        # Grouped by identity: during a swap one turn may hold requests for two versions.
        groups: dict[int, list[_Waiter]] = {}
        for waiter in batch:
            groups.setdefault(id(waiter[0]), []).append(waiter)
        for group in groups.values():
            _score_group(group)


def _score_group(group: list[_Waiter]) -> None:
    model = group[0][0]
    try:
        scores = model.predict([row for _, rows, _ in group for row in rows])
    except Exception as exc:  # noqa: BLE001 - not swallowed: every waiter gets the error
        for _, _, future in group:
            if not future.done():
                future.set_exception(exc)
        return
    start = 0
    for _, rows, future in group:
        if not future.done():  # a caller that was cancelled meanwhile is skipped
            future.set_result(scores[start : start + len(rows)])
        start += len(rows)
