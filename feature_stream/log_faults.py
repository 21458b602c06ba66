"""A dependency outage is one line in the log, not Faust's traceback of it.

When Redis, Kafka or the offline store stops answering, the worker process stops and its
supervisor says so once (`feature_stream.supervisor`). Faust logs the same crash first, with
a traceback of some sixty lines and a CRITICAL "We experienced a crash!" line. This filter
keeps Faust's line and drops its traceback when the exception is a dependency fault (a bug
keeps its traceback), and drops the CRITICAL line, which the worker's own line replaces.
"""

from __future__ import annotations

import logging

from feature_stream.faults import classify

__all__ = ["FaultTracebackFilter", "install"]

_REPLACED = "We experienced a crash!"


class FaultTracebackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(_REPLACED):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and classify(exc).dependency is not None:
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.msg} ({type(exc).__name__}: {exc})"
        return True


def install() -> None:
    """Filter every handler of the root logger (once; Faust sets up its handlers at start)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, FaultTracebackFilter) for f in handler.filters):
            handler.addFilter(FaultTracebackFilter())
