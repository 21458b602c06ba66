"""Worker state and raw archive, earlier JSON layout vs packed / typed layout (not a test).

    python bench/feature_pipeline/state_archive.py --events 100000 --entities 10000 --repeats 3

Demo-like transactions (a card and a merchant entity, an amount and a merchant value, uuid
event ids, positions on a 12-partition topic), in one run:

* **State** (Redis, under a fresh prefix deleted afterwards): every event's dedup record in its
  message key's hash and its retained event in the card view entity's hash, saved through the
  worker's save path (the earlier JSON one, kept here verbatim, and `RedisStateStore`), then
  loaded back. Bytes are Redis's own `MEMORY USAGE` of the hashes, per event and per entity.
  The first load of JSON state by the new store (which rewrites it packed) is timed too.
* **Archive** (parquet in a temp folder): the same events written as the earlier writer wrote
  them (JSON text columns) and as `OfflineStore.write_archive` writes them now; bytes on disk
  and read times per 100k events: the whole archive as dicts (`read_archive`; the old layout
  through the old reader: parquet then JSON), and the typed table with one field looked up.

Runs alternate old/new `--repeats` times; medians are printed, and the whole result as JSON
with `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import redis
import redis.asyncio as aredis

from feature_stream.aggregate import Rec
from feature_stream.state import EntityChanges, KeyChanges, KeyState, RedisStateStore, Seen
from featurestore.archive_layout import value_column
from featurestore.offline import ArchiveRow, OfflineStore, date_of
from featurestore.online_tiles import LUA_HASH_HELPERS

VIEW = "card_stats:1"

# -- the earlier release's state save and load, verbatim in what they store --------------------

_OLD_SAVE = (
    LUA_HASH_HELPERS
    + """
local ops = cjson.decode(ARGV[1])
for i, key in ipairs(KEYS) do
  hset(key, ops[i][1])
  hdel(key, ops[i][2])
end
return #KEYS
"""
)
_compact_json = json.JSONEncoder(separators=(",", ":")).encode
_ops_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_sorted_json = json.JSONEncoder(sort_keys=True).encode


class OldStateStore:
    """The earlier release's save (one cjson document per call of <= 2,000 fields) and load."""

    def __init__(self, client: aredis.Redis, prefix: str) -> None:
        self._r, self._p = client, prefix
        self._save = client.register_script(_OLD_SAVE)

    async def save(self, keys: Mapping[str, KeyChanges], changes: EntityChanges) -> None:
        ops: list[tuple[str, dict[str, str]]] = [
            (f"{self._p}:in:{k}", {e: f"{s.position}|{s.time_ms}|{s.watermark_ms}" for e, s in kc.added.items()})
            for k, kc in keys.items()
        ]
        for (view, entity), recs in changes.added.items():
            name = f"{self._p}:vw:{view.replace(':', ':v')}:{entity}"
            ops.append((name, {e: _compact_json([r.time_ms, dict(r.values)]) for e, r in recs.items()}))
        names: list[str] = []
        docs: list[Any] = []
        size = 0
        for name, sets in ops:
            if names and size + len(sets) > 2000:
                await self._save(names, [_ops_json(docs)])
                names, docs, size = [], [], 0
            names.append(name)
            docs.append((sets, []))
            size += len(sets)
        if names:
            await self._save(names, [_ops_json(docs)])

    async def _hgetall_many(self, names: list[str]) -> list[dict[bytes, bytes]]:
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        raws: list[dict[bytes, bytes]] = await pipe.execute()
        return raws

    async def load_keys(self, keys: list[str]) -> dict[str, KeyState]:
        raws = await self._hgetall_many([f"{self._p}:in:{k}" for k in keys])
        out: dict[str, KeyState] = {}
        for k, raw in zip(keys, raws, strict=True):
            st = KeyState()
            for f, v in raw.items():
                pos, t, wm = v.decode().rsplit("|", 2)
                st.seen[f.decode()] = Seen(pos, int(t), int(wm))
            st.max_ms = max((s.time_ms for s in st.seen.values()), default=-1)
            out[k] = st
        return out

    async def load_entities(self, refs: list[tuple[str, str]]) -> dict[tuple[str, str], list[Rec]]:
        raws = await self._hgetall_many([f"{self._p}:vw:{v.replace(':', ':v')}:{e}" for v, e in refs])
        return {ref: [_old_rec(f.decode(), v) for f, v in raw.items()] for ref, raw in zip(refs, raws, strict=True)}


def _old_rec(event_id: str, raw: bytes) -> Rec:
    t, values = json.loads(raw)
    return Rec(int(t), event_id, values)


def _old_archive_table(rows: list[ArchiveRow]) -> pa.Table:
    cols = {
        "event_id": [r.event_id for r in rows],
        "event_type": [r.event_type for r in rows],
        "event_time_ms": [r.event_time_ms for r in rows],
        "entities_json": [_sorted_json(dict(r.entities)) for r in rows],
        "values_json": [_sorted_json(dict(r.values)) for r in rows],
        "source": [r.source for r in rows],
        "schema_version": pa.array([r.schema_version for r in rows], pa.int32()),
        "msg_key": [r.msg_key for r in rows],
        "watermark_ms": [r.watermark_ms for r in rows],
        "late": [r.late for r in rows],
        "ingest_ns": [r.ingest_ns for r in rows],
    }
    return pa.table(cols)


# -- data -------------------------------------------------------------------------------------------


def _events(n: int, entities: int, seed: int) -> list[ArchiveRow]:
    rng = random.Random(seed)
    t0 = 1_767_225_600_000
    rows = []
    for i in range(n):
        card, merchant = f"card-{rng.randrange(entities):06d}", f"m-{rng.randrange(500):04d}"
        t = t0 + i * 40 + rng.randrange(2000)
        values: dict[str, Any] = {"amount": round(rng.lognormvariate(3, 1), 2), "merchant_id": merchant}
        rows.append(
            ArchiveRow(
                uuid.UUID(int=rng.getrandbits(128)).hex, "transaction", t, {"card_id": card, "merchant_id": merchant},
                values, "fti-simulate", 1, card, t - rng.randrange(3000), False, 1_000_000 * t,
            )
        )  # fmt: skip
    return rows


def _state_changes(rows: list[ArchiveRow]) -> tuple[dict[str, KeyChanges], EntityChanges]:
    keys: dict[str, dict[str, Seen]] = {}
    changes = EntityChanges()
    for i, r in enumerate(rows):
        keys.setdefault(r.msg_key, {})[r.event_id] = Seen(
            f"raw-events/{i % 12}/{i // 12}", r.event_time_ms, r.watermark_ms
        )
        changes.add((VIEW, r.entities["card_id"]), Rec(r.event_time_ms, r.event_id, {"amount": r.values["amount"]}))
    return {k: KeyChanges(s, set()) for k, s in keys.items()}, changes


# -- measuring ------------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _memory(client: redis.Redis, names: list[str]) -> int:
    """Redis's own `MEMORY USAGE` of these keys, summed (the shared Redis holds others too)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
    return sum(int(n or 0) for n in pipe.execute())


def _drop(client: redis.Redis, names: list[str]) -> None:
    for i in range(0, len(names), 1000):
        client.delete(*names[i : i + 1000])


def _state_run(url: str, layout: str, rows: list[ArchiveRow]) -> dict[str, float]:
    keys, changes = _state_changes(rows)
    prefix = f"bench-state-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(url)
    key_names, refs = list(keys), list(changes.added)
    in_names = [f"{prefix}:in:{k}" for k in key_names]
    vw_names = [f"{prefix}:vw:{v.replace(':', ':v')}:{e}" for v, e in refs]

    async def go() -> dict[str, float]:
        client = aredis.Redis.from_url(url)
        new, old = RedisStateStore(client, prefix), OldStateStore(client, prefix)
        t = time.perf_counter()
        await (old if layout == "json" else new).save(keys, changes)
        out = {"save_s": time.perf_counter() - t}
        t = time.perf_counter()
        store = old if layout == "json" else new
        await store.load_keys(key_names)
        await store.load_entities(refs)
        out["load_s"] = time.perf_counter() - t
        out["key_bytes"], out["entity_bytes"] = _memory(sync, in_names), _memory(sync, vw_names)
        if layout == "json":  # the first start of the new worker on it: read, and rewritten packed
            t = time.perf_counter()
            await new.load_keys(key_names)
            await new.load_entities(refs)
            out["migrate_load_s"] = time.perf_counter() - t
            out["migrated_fields"] = new.repacked
        await client.aclose()
        return out

    try:
        return asyncio.run(go())
    finally:
        _drop(sync, in_names + vw_names)


def _archive_run(folder: Path, layout: str, rows: list[ArchiveRow]) -> dict[str, float]:
    store = OfflineStore(str(folder / f"{layout}-{uuid.uuid4().hex[:6]}"))
    day = date_of(rows[0].event_time_ms)
    if layout == "json":
        write_s, _ = _timed(
            lambda: store.write_table(f"archive/event_type=transaction/date={day}", _old_archive_table(rows))
        )
    else:
        write_s, _ = _timed(lambda: store.write_archive(rows))
    files = store.archive_files("transaction")
    out = {"write_s": write_s, "bytes": float(sum(store.fs.size(f) for f in files))}
    if layout == "json":  # what the earlier release's readers did: parquet, then JSON per row
        out["read_dicts_s"], _ = _timed(lambda: _old_read_dicts(files))
    else:
        out["read_dicts_s"], _ = _timed(store.read_archive)
        table_s, table = _timed(store.read_archive_table)
        field_s, _ = _timed(lambda: value_column(table["values"], "amount"))
        out["read_table_s"], out["one_field_s"] = table_s, field_s
    out["read_new_reader_s"], _ = _timed(store.read_archive)  # either layout, through today's reader
    return out


def _old_read_dicts(files: list[str]) -> pd.DataFrame:
    df = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    df = df.sort_values("ingest_ns", kind="stable").drop_duplicates(["event_type", "event_id"], keep="first")
    df = df.sort_values(["event_time_ms", "event_id"], kind="stable").reset_index(drop=True)
    for col in ("entities_json", "values_json"):
        df[col] = json.loads("[" + ",".join(df[col].tolist()) + "]")
    return df


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--redis-url", default="redis://localhost:6379/0")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = _events(args.events, args.entities, seed=7)
    state: dict[str, list[dict[str, float]]] = {"json": [], "packed": []}
    archive: dict[str, list[dict[str, float]]] = {"json": [], "typed": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, old first
            for layout in state:
                state[layout].append(_state_run(args.redis_url, layout, rows))
            for layout in archive:
                archive[layout].append(_archive_run(Path(tmp), layout, rows))
    result = _report(args, {k: _median(v) for k, v in state.items()}, {k: _median(v) for k, v in archive.items()})
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def _report(args: argparse.Namespace, state: dict[str, dict[str, float]], archive: dict[str, dict[str, float]]) -> Any:
    n, per100k = args.events, 100_000 / args.events
    entities = len({r.entities["card_id"] for r in _events(n, args.entities, seed=7)})
    print(f"{n} events, {entities} card entities, medians of {args.repeats} interleaved runs")
    print("state (Redis)        B/event keys  B/event view  B/entity view  save s   load s")
    for layout, s in state.items():
        print(
            f"  {layout:<18} {s['key_bytes'] / n:>12.1f}  {s['entity_bytes'] / n:>12.1f}  "
            f"{s['entity_bytes'] / entities:>13.0f}  {s['save_s']:>6.3f}   {s['load_s']:>6.3f}"
        )
    print(f"  first load of JSON state by the new store (rewrites it packed): {state['json']['migrate_load_s']:.3f} s")
    print("archive (parquet)    bytes/100k    write s/100k  read dicts s/100k  typed table s  one field s")
    for layout, a in archive.items():
        print(
            f"  {layout:<18} {a['bytes'] * per100k:>10.0f}    {a['write_s'] * per100k:>10.3f}    "
            f"{a['read_dicts_s'] * per100k:>12.3f}       {a.get('read_table_s', float('nan')) * per100k:>8.3f}"
            f"      {a.get('one_field_s', float('nan')) * per100k:>8.4f}"
        )
    converted = archive["json"]["read_new_reader_s"] * per100k
    print(f"  today's reader on the JSON layout (converts on read): {converted:.3f} s/100k")
    return {"events": n, "entities": entities, "repeats": args.repeats, "state": state, "archive": archive}


if __name__ == "__main__":
    main()
