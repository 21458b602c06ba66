"""Entity keys every store and reader shares: their limits, and composite keys.

A composite entity key (a route: pickup zone and dropoff zone) is one string, its parts
joined by `|`; a `\\` escapes a `|` or a `\\` inside a part, so any parts round-trip:
`split_key(join_key(parts)) == parts`. A single-part key is the part itself unless it holds
`|` or `\\`, so keys of single-field entities are what they always were.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["KEY_SEPARATOR", "MAX_ENTITY_KEY_CHARS", "MAX_EVENT_ID_CHARS", "join_key", "split_key"]

# An entity key names a Redis key and a parquet string; the worker dead-letters a longer one
# (INVALID_KEY) and the server refuses it (INVALID_ARGUMENT), so none is computed unservable.
MAX_ENTITY_KEY_CHARS = 512
MAX_EVENT_ID_CHARS = 1024

KEY_SEPARATOR = "|"
_ESCAPE = "\\"


def join_key(parts: Sequence[str]) -> str:
    """The key string of a composite key: parts joined by `|`, `|` and `\\` escaped in a part."""
    if isinstance(parts, str):
        raise TypeError("join_key takes a sequence of parts, not one string")
    if not parts:
        raise ValueError("a composite key needs at least one part")
    return KEY_SEPARATOR.join(
        p.replace(_ESCAPE, _ESCAPE * 2).replace(KEY_SEPARATOR, _ESCAPE + KEY_SEPARATOR) for p in parts
    )


def split_key(text: str) -> list[str]:
    """The parts of a key string `join_key` made; a `\\` before anything but `|` or `\\`, or at
    the end, is refused (no `join_key` makes it)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == KEY_SEPARATOR:
            parts.append("".join(current))
            current = []
        elif ch == _ESCAPE:
            nxt = next(chars, None)
            if nxt not in (KEY_SEPARATOR, _ESCAPE):
                raise ValueError(f"bad escape in composite key {text!r}: '\\' must precede '|' or '\\'")
            current.append(nxt)
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts
