"""The two floors of the feature pipeline bench, each run as its own process by `run.py`:

    python bench/feature_pipeline/consumers.py bare  --topic T --total N   # confluent-kafka consume + decode
    python bench/feature_pipeline/consumers.py faust --topic T --total N   # Faust's consumer as the worker runs it

`bare` is the fastest any Python consumer of `fti.v1.Event` goes here; `faust` is Faust's consumer
(`BatchApp`, the worker's settings and event loop) doing only decode and ack: the most any
Faust worker could do. Each times itself from its first message to its last and prints one line
`RESULT {"events", "seconds", "cpu_s"}` (process CPU time over that interval, all threads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

from fti.v1 import events_pb2

__all__ = ["bare", "faust_floor"]


def _report(events: int, t0: float, cpu0: float) -> None:
    out = {"events": events, "seconds": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0}
    print("RESULT " + json.dumps(out), flush=True)


def bare(bootstrap: str, topic: str, total: int) -> None:
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    n, t0, cpu0 = 0, 0.0, 0.0
    while n < total:
        # Ask for no more than what is left: `consume` waits out its timeout for a short batch.
        msgs = c.consume(min(2000, total - n), timeout=1.0)
        if msgs and n == 0:
            t0, cpu0 = time.monotonic(), time.process_time()
        for msg in msgs:
            if msg.error() is None:
                events_pb2.Event.FromString(msg.value() or b"")
                n += 1
    _report(n, t0, cpu0)
    c.close()


def faust_floor(bootstrap: str, topic: str, total: int) -> None:
    import faust

    from feature_stream.app import _app_config, _use_event_loop
    from feature_stream.batch_consumer import BatchApp
    from feature_stream.settings import FeatureStreamSettings

    os.environ["FTI_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    settings = FeatureStreamSettings()
    _use_event_loop(settings.event_loop)
    app = BatchApp(f"floor-{uuid.uuid4().hex[:8]}", **_app_config(settings))
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    seen = [0]
    start = [0.0, 0.0]

    @app.batch_handler(source)
    async def handle(messages: list[Any]) -> None:
        if seen[0] == 0:
            start[:] = [time.monotonic(), time.process_time()]
        for m in messages:
            events_pb2.Event.FromString(m.value or b"")
            m.incref()
            m.ack(app.consumer)
        seen[0] += len(messages)
        if seen[0] >= total:
            _report(seen[0], start[0], start[1])
            os._exit(0)

    sys.argv = sys.argv[:1]
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bare", "faust"])
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--total", type=int, required=True)
    args = ap.parse_args()
    (bare if args.mode == "bare" else faust_floor)(args.bootstrap, args.topic, args.total)


if __name__ == "__main__":
    main()
