"""Worker state as the release before packed state wrote it (JSON-text layout), for tests that
start on old state: its encoders, verbatim, and a rewrite of a live prefix into that layout."""

from __future__ import annotations

import json

import redis

from feature_stream.aggregate import Rec
from feature_stream.state import Seen, unpack_rec, unpack_seen

__all__ = ["downgrade_state", "old_rec", "old_seen"]

# The earlier release's `Seen.encode` and `_rec_encode`.
_old_json = json.JSONEncoder(separators=(",", ":")).encode


def old_seen(s: Seen) -> str:
    return f"{s.position}|{s.time_ms}|{s.watermark_ms}"


def old_rec(rec: Rec) -> str:
    return _old_json([rec.time_ms, dict(rec.values)])


def downgrade_state(client: redis.Redis, state_prefix: str) -> int:
    """Rewrite every state hash under `state_prefix` in the JSON layout; returns the fields."""
    n = 0
    for kind, encode in (("in", lambda f, v: old_seen(unpack_seen(v))), ("vw", lambda f, v: old_rec(unpack_rec(f, v)))):
        for name in client.scan_iter(match=f"{state_prefix}:{kind}:*", count=1000):
            raw = client.hgetall(name)
            client.hset(name, mapping={f: encode(f.decode(), v) for f, v in raw.items()})
            n += len(raw)
    return n
