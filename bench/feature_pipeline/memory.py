"""Redis bytes per entity and view after many distinct entities (a phase of `run.py`).

Synthetic transactions: entity i is card `mc<i>` at merchant `mm<i>` (so both demo views get
`entities` distinct entities), `per_entity` events each, a minute or more apart in the last
50 minutes (several tiles per step, like a card in use). After the worker has caught up,
`MEMORY USAGE <key> SAMPLES 0` (every field counted) is read for the keys of a sample of
entities, grouped by what they hold:
* online, what the server reads: `tiles` and `tail` hashes per view and entity;
* worker state per view entity: `vw` (the retained events the tiles are recomputed from);
* worker state per message key (shared by every view fed by the key): `in` (recent ids,
  positions, watermark) and one `id` key per event (the dedup claim).
`INFO memory`'s used_memory delta over the phase, per entity, is a cross-check (noisy on a
shared Redis). `what_if` copies sampled tiles hashes into a private `redis-server` to measure
what two changes would save: tile values without feature names, and a higher
`hash-max-listpack-value` (hashes with a value over 64 bytes are stored as hash tables).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.values import to_value
from fti.v1 import events_pb2

__all__ = ["entity_events", "measure", "produce_entities", "what_if"]

MINUTE = 60_000


def entity_events(tag: str, entities: int, per_entity: int, seed: int = 5) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every synthetic event, entity by entity."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    for i in range(entities):
        card, merchant = f"mc{i:07d}", f"mm{i:07d}"
        minutes = rng.sample(range(1, 50), per_entity)
        for j, m in enumerate(sorted(minutes, reverse=True)):
            ev = events_pb2.Event(
                event_id=f"{tag}-{i}-{j}",
                event_type="transaction",
                entities={"card_id": card, "merchant_id": merchant},
                values={"amount": to_value(round(rng.uniform(1, 500), 2)), "merchant_id": to_value(merchant)},
                schema_version=1,
                source="bench-memory",
            )
            ev.event_time.FromMilliseconds(now - m * MINUTE - rng.randrange(MINUTE))
            yield card.encode(), ev.SerializeToString()


def produce_entities(bootstrap: str, topic: str, partitions: int, tag: str, entities: int, per_entity: int) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"})
    total = 0
    for key, value in entity_events(tag, entities, per_entity):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        total += 1
        if total % 200_000 == 0:
            print(f"  produced {total:,} events", flush=True)
    producer.flush(120)
    return total


def _usage(r: redis.Redis, keys: list[str]) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return [int(x or 0) for x in pipe.execute()]


def _hash_shape(r: redis.Redis, key: str) -> dict[str, Any]:
    """Fields of one hash and their sizes: what the bytes are spent on."""
    raw = r.hgetall(key)
    return {
        "key_chars": len(key),
        "fields": len(raw),
        "field_name_bytes": sum(len(f) for f in raw),
        "value_bytes": sum(len(v) for v in raw.values()),
        "encoding": (r.object("encoding", key) or b"").decode(),
        "ttl_ms": r.pttl(key),
    }


def measure(
    r: redis.Redis, prefix: str, state_prefix: str, tag: str, entities: int, per_entity: int, sample: int
) -> dict[str, Any]:
    rng = random.Random(11)
    picks = rng.sample(range(entities), min(sample, entities))
    views = {"card_activity": "mc", "merchant_activity": "mm"}
    out: dict[str, Any] = {"sampled_entities": len(picks)}
    for view, letter in views.items():
        names = [f"{letter}{i:07d}" for i in picks]
        parts = {
            "tiles": [f"{prefix}:tiles:{view}:v1:{n}" for n in names],
            "tail": [f"{prefix}:tail:{view}:v1:{n}" for n in names],
            "state_vw": [f"{state_prefix}:vw:{view}:v1:{n}" for n in names],
        }
        got = {part: _usage(r, keys) for part, keys in parts.items()}
        present = sum(1 for x in got["tiles"] if x)
        per = {part: statistics.fmean(v) for part, v in got.items()}
        out[view] = {
            "entities_with_tiles": present,
            "bytes_per_entity": {k: round(v, 1) for k, v in per.items()},
            "online_bytes_per_entity": round(per["tiles"] + per["tail"], 1),
            "with_state_bytes_per_entity": round(sum(per.values()), 1),
            "example_tiles_hash": _hash_shape(r, parts["tiles"][0]),
            "example_tail_hash": _hash_shape(r, parts["tail"][0]),
            "example_state_hash": _hash_shape(r, parts["state_vw"][0]),
            "tiles_what_if": what_if(r, parts["tiles"][:200]),
        }
    keys_in = [f"{state_prefix}:in:mc{i:07d}" for i in picks]
    ids = [f"{state_prefix}:id:transaction:{tag}-{i}-{j}" for i in picks for j in range(per_entity)]
    out["message_key_state_bytes"] = {
        "in_per_key": round(statistics.fmean(_usage(r, keys_in)), 1),
        "id_claims_per_key": round(sum(_usage(r, ids)) / len(picks), 1),
    }
    return out


def _positional(raw: bytes) -> bytes:
    """A tile value without its feature names: `[t, [partial, ...]]` in the view's feature order."""
    t, partials = json.loads(raw)
    return json.dumps([t, list(partials.values())], separators=(",", ":")).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def what_if(r: redis.Redis, keys: list[str]) -> dict[str, float]:
    """MEMORY USAGE of the same tiles hashes in a private Redis: as stored, with tile values
    without feature names, and with `hash-max-listpack-value` raised so the hashes stay listpacks.
    Needs `redis-server` on PATH; {} without it."""
    server = shutil.which("redis-server")
    if server is None or not keys:
        return {}
    port = _free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        private = redis.Redis(port=port)
        for _ in range(100):
            try:
                private.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        hashes = [h for h in (r.hgetall(k) for k in keys) if h]
        if not hashes:
            return {}
        out: dict[str, float] = {}
        for limit in (64, 256):
            private.config_set("hash-max-listpack-value", limit)
            for name, encode in (("as_stored", lambda v: v), ("positional", _positional)):
                private.flushall()  # the private server of this function only
                for i, h in enumerate(hashes):
                    private.hset(f"k{i}", mapping={f: (v if f in (b"n", b"w") else encode(v)) for f, v in h.items()})
                usage = _usage(private, [f"k{i}" for i in range(len(hashes))])
                out[f"{name}_listpack_value_{limit}"] = round(statistics.fmean(usage), 1)
        return out
    finally:
        proc.terminate()
        proc.wait(10)
