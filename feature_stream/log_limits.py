"""One log line per repeated failure, not one per retry.

During a broker outage aiokafka and Faust log the same connection error many times a second
(1,400 ERROR lines in 20 s were measured). `RepeatFilter` lets the first record of each kind
through, drops the repeats for `interval_s`, and then lets one through saying how many it
dropped.
"""

from __future__ import annotations

import logging
import time

__all__ = ["RepeatFilter", "install"]


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # One filter serves every root handler: a record gets the same answer from each, or
        # only the first handler would ever show a line.
        judged = getattr(record, "_fti_repeat_shown", None)
        if judged is not None:
            return bool(judged)
        shown = self._judge(record)
        record._fti_repeat_shown = shown
        return shown

    def _judge(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        seen = self._last.get(kind)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[kind] = (seen[0], seen[1] + 1)
            return False
        dropped = seen[1] if seen else 0
        self._last[kind] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last {self.interval_s:.0f} s)"
        return True


def install(interval_s: float = 30.0) -> RepeatFilter:
    """Filter every handler of the root logger (once; Faust sets up its handlers at start)."""
    flt = RepeatFilter(interval_s)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
