"""Feature pipeline benchmark (not a test): worker throughput vs a bare consume+decode loop, and freshness.

    FTI_KAFKA_BOOTSTRAP_SERVERS=localhost:9092 FTI_REDIS_URL=redis://localhost:6379/0 \
        python bench/feature_pipeline/run.py --events 100000 --rate 200 --seconds 15

1. Produces `--events` demo transactions (plus labels and duplicates) to a fresh topic.
2. Bare loop: a confluent-kafka consumer reads and decodes every message (fti.v1.Event).
   Faust floor: Faust's consumer as the worker runs it, decoding and acking only.
3. Worker: `fti features worker` on the same topic; events/s is measured from its first
   committed batch to caught up (raw and re-keyed topics), so start-up is not counted.
4. Freshness: with the worker idle, probe events are produced at a fixed rate, each for a
   new card; the time from produce to the card's value being visible in Redis is recorded.
Prints the figures and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.values import to_value
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate

ROOT = Path(__file__).parents[2]


def produce_backlog(bootstrap: str, topic: str, events: int, partitions: int) -> int:
    """Create `topic` and fill it with `events` demo transactions (plus labels, duplicates); returns messages."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    total = 0
    for ev in generate(events, SimConfig(seed=1)):
        while True:
            try:
                producer.produce(topic, key=ev.key, value=ev.value)
                break
            except BufferError:
                producer.poll(0.1)
        total += 1
    producer.flush(60)
    return total


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def bare_loop(bootstrap: str, topic: str, total: int) -> float:
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    c.subscribe([topic])
    n, t0 = 0, None
    while n < total:
        # Ask for no more than what is left: `consume` waits out its timeout for a short batch.
        for msg in c.consume(min(1000, total - n), timeout=1.0):
            if msg.error() is None:
                t0 = t0 or time.monotonic()
                events_pb2.Event.FromString(msg.value() or b"")
                n += 1
    elapsed = time.monotonic() - (t0 or time.monotonic())
    c.close()
    return n / elapsed


# Faust's consumer as the worker runs it (BatchApp, same settings and event loop), decoding and
# acking each event and doing nothing else: the most any Faust worker could do here.
FAUST_FLOOR_APP = """
import os, time
import faust
from feature_stream.app import _app_config, _use_event_loop
from feature_stream.batch_consumer import BatchApp
from feature_stream.settings import FeatureStreamSettings
from fti.v1 import events_pb2

settings = FeatureStreamSettings()
_use_event_loop(settings.event_loop)
app = BatchApp(os.environ["FLOOR_APP_ID"], **_app_config(settings))
topic = app.topic(os.environ["FLOOR_TOPIC"], key_type=bytes, value_type=bytes)
total, seen, t0 = int(os.environ["FLOOR_TOTAL"]), 0, None

@app.batch_handler(topic)
async def handle(messages):
    global seen, t0
    t0 = t0 or time.monotonic()
    for m in messages:
        events_pb2.Event.FromString(m.value or b"")
        m.incref()
        m.ack(app.consumer)
    seen += len(messages)
    if seen >= total:
        print(f"RATE {total / (time.monotonic() - t0)}", flush=True)
        os._exit(0)

faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
"""


def faust_floor(bootstrap: str, topic: str, total: int) -> float:
    env = {
        **os.environ,
        "FTI_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FLOOR_APP_ID": f"floor-{uuid.uuid4().hex[:8]}",
        "FLOOR_TOPIC": topic,
        "FLOOR_TOTAL": str(total),
    }
    out = subprocess.run(
        [sys.executable, "-c", FAUST_FLOOR_APP], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    # Faust's worker routes print() through its logger, so the line may come on stderr.
    rates = [line.split("RATE ")[1].split()[0] for line in (out.stdout + out.stderr).splitlines() if "RATE " in line]
    if not rates:
        raise RuntimeError(f"faust floor run failed: {out.stderr[-2000:]}")
    return float(rates[0])


def _committed(bootstrap: str, group: str, topics: list[str]) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    done = high_total = 0
    try:
        for topic in topics:
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                return 0, 1
            tps = [TopicPartition(topic, p) for p in meta.partitions]
            for tp in c.committed(tps, timeout=10):
                high = c.get_watermark_offsets(tp, timeout=10)[1]
                done += max(tp.offset, 0)
                high_total += high
    finally:
        c.close()
    return done, high_total


def worker_rate(bootstrap: str, env: dict[str, str], raw_total: int) -> tuple[float, subprocess.Popen[bytes]]:
    group = env["FTI_WORKER_APP_ID"]
    topics = [env["FTI_EVENTS_TOPIC"], f"{group}-{env['FTI_EVENTS_TOPIC']}-rekeyed"]
    log = open(Path(tempfile.gettempdir()) / f"{group}.log", "wb")  # noqa: SIM115 - lives as long as the worker
    code = "from feature_stream.cli import features; features(['worker'])"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
    first: tuple[float, int] | None = None
    while True:
        raw_done, _ = _committed(bootstrap, group, topics[:1])
        now = time.monotonic()
        if first is None and raw_done > 0:
            first = (now, raw_done)
        done, high = _committed(bootstrap, group, topics)
        if first is not None and raw_done >= raw_total and done >= high:
            return (raw_total - first[1]) / max(now - first[0], 1e-6), proc
        time.sleep(0.2)


def freshness(bootstrap: str, topic: str, redis_url: str, prefix: str, rate: float, seconds: float) -> list[float]:
    r = redis.Redis.from_url(redis_url)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() or len(seen) < len(sent):
            with lock:
                waiting = [k for k in sent if k not in seen]
            if waiting:
                pipe = r.pipeline(transaction=False)
                for k in waiting:
                    pipe.exists(f"{prefix}:tiles:card_activity:v1:{k}")
                now = time.monotonic()
                for k, ok in zip(waiting, pipe.execute(), strict=True):
                    if ok:
                        seen[k] = now
            if stop.is_set() and time.monotonic() - stop_at[0] > 10:
                return
            time.sleep(0.002)

    stop_at = [0.0]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        card = f"probe-{uuid.uuid4().hex[:10]}"
        ev = events_pb2.Event(
            event_id=uuid.uuid4().hex,
            event_type="transaction",
            entities={"card_id": card, "merchant_id": "m0001"},
            values={"amount": to_value(10.0 + i % 7), "merchant_id": to_value("m0001")},
            schema_version=1,
            source="bench",
        )
        ev.event_time.FromMilliseconds(int(time.time() * 1000))
        producer.produce(topic, key=card.encode(), value=ev.SerializeToString())
        producer.poll(0)
        with lock:
            sent[card] = time.monotonic()
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(10)
    stop_at[0] = time.monotonic()
    stop.set()
    watcher.join()
    return [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]


def main() -> None:
    ap = argparse.ArgumentParser()
    # ~7 s of worker time: the commit lag at each end (up to ~0.7 s) stays small beside it.
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=float, default=200.0, help="Freshness probe events per second.")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--out", default=str(ROOT / "bench/feature_pipeline/results.json"))
    args = ap.parse_args()
    bootstrap = os.environ.get("FTI_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    redis_url = os.environ.get("FTI_REDIS_URL", "redis://localhost:6379/0")
    tag = uuid.uuid4().hex[:8]
    topic, prefix, app_id = f"bench-raw-{tag}", f"bench-{tag}", f"bench-app-{tag}"
    total = produce_backlog(bootstrap, topic, args.events, args.partitions)
    print(f"produced {total} messages to {topic}")

    bare = bare_loop(bootstrap, topic, total)
    print(f"bare confluent-kafka consume+decode: {bare:,.0f} events/s")
    floor = faust_floor(bootstrap, topic, total)
    print(
        f"Faust consumer, decode only (the ceiling of a Faust worker): {floor:,.0f} events/s  ratio {floor / bare:.3f}"
    )
    env = dict(os.environ)
    env.update(
        FTI_EVENTS_TOPIC=topic,
        FTI_DLQ_TOPIC=f"{topic}-dlq",
        FTI_WORKER_APP_ID=app_id,
        FTI_REDIS_PREFIX=prefix,
        FTI_OFFLINE_STORE_URI=tempfile.mkdtemp(prefix="bench-offline-"),
        FTI_DEFINITIONS_PATH=str(ROOT / "examples/fraud/features.yaml"),
        FTI_EVENTS_TOPIC_PARTITIONS=str(args.partitions),
        FTI_WORKER_COMMIT_INTERVAL_S="0.2",
    )
    rate, proc = worker_rate(bootstrap, env, total)
    print(f"worker: {rate:,.0f} events/s  ratio {rate / bare:.3f}")
    lat = freshness(bootstrap, topic, redis_url, prefix, args.rate, args.seconds)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    p50, p99 = _percentile(lat, 0.5), _percentile(lat, 0.99)
    print(f"freshness at {args.rate:.0f}/s: p50 {p50:.1f} ms  p99 {p99:.1f} ms  ({len(lat)} probes)")
    result = {
        "messages": total,
        "partitions": args.partitions,
        "bare_events_per_s": round(bare, 1),
        "worker_events_per_s": round(rate, 1),
        "ratio": round(rate / bare, 4),
        "faust_floor_events_per_s": round(floor, 1),
        "faust_floor_ratio": round(floor / bare, 4),
        "worker_vs_faust_floor": round(rate / floor, 4),
        "freshness_rate_per_s": args.rate,
        "freshness_p50_ms": round(p50, 2),
        "freshness_p99_ms": round(p99, 2),
        "freshness_probes": len(lat),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith((topic, app_id))]
    admin.delete_topics(topics)
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i : i + 1000])


if __name__ == "__main__":
    main()
