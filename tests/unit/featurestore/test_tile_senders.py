"""The tile stream's own RESP packing is byte for byte redis-py's."""

from __future__ import annotations

import redis.asyncio as aredis

from featurestore.tile_senders import _evalsha


def test_an_evalsha_packed_in_one_piece_is_what_redis_py_sends() -> None:
    conn = aredis.Connection()
    keys = ["fti:tiles:card_activity:v1:c1", "fti:tail:card_activity:v1:ü\r\n"]
    args = [b"\x00\xff\r\n msgpack", "text é", 7, -3, 2.5, 10**20]
    sha = b"0" * 40
    want = b"".join(conn.pack_command("EVALSHA", sha, len(keys), *keys, *args))
    assert _evalsha(sha, keys, args) == want
