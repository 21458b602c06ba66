"""Drill 5: ≥ 2,000 malformed messages of every class, mixed with valid events.

Every malformed message must reach the dead-letter topic with the reason its class implies
(its original bytes intact, read back from the offline store when too large to send), every
valid event must be archived, and `fti features verify --sample 0` must find 0 mismatches.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from bench.drills.broker_kill import judge_stream
from bench.drills.harness import DrillResult
from bench.drills.pipeline import WORKER, Message, Pipeline, sim_messages
from bench.drills.stack import PrivateStack
from featurestore.values import to_value
from fti.v1 import events_pb2, values_pb2

__all__ = ["malformed", "raw_value", "run"]

R = "DEAD_LETTER_REASON_"
Mutation = Callable[[random.Random, events_pb2.Event], object]


def _set_amount(value: float | bool | str) -> Mutation:
    return lambda rng, ev: ev.values["amount"].CopyFrom(raw_value(value))


def raw_value(x: float | bool | str) -> values_pb2.Value:
    """A Value as a careless producer sends it: NaN and infinities too (`to_value` refuses them)."""
    return values_pb2.Value(double_value=x) if isinstance(x, float) else to_value(x)


def _label(value: int | None) -> Mutation:
    def mutate(rng: random.Random, ev: events_pb2.Event) -> None:
        ev.event_type = "fraud_label"
        del ev.entities["merchant_id"]
        ev.values.clear()
        if value is not None:
            ev.values["is_fraud"].CopyFrom(to_value(value))

    return mutate


def _time(seconds: int, nanos: int = 0) -> Mutation:
    def mutate(rng: random.Random, ev: events_pb2.Event) -> None:
        ev.event_time.seconds, ev.event_time.nanos = seconds, nanos

    return mutate


# (class, expected reason, mutation of a valid transaction)
CLASSES: list[tuple[str, str, Mutation]] = [
    ("amount NaN", R + "NON_FINITE_VALUE", _set_amount(math.nan)),
    ("amount +inf", R + "NON_FINITE_VALUE", _set_amount(math.inf)),
    ("amount -inf", R + "NON_FINITE_VALUE", _set_amount(-math.inf)),
    ("amount as text", R + "WRONG_TYPE", _set_amount("12.50")),
    ("amount as bool", R + "WRONG_TYPE", _set_amount(True)),
    ("merchant_id as number", R + "WRONG_TYPE", lambda rng, ev: ev.values["merchant_id"].CopyFrom(to_value(7.0))),
    ("amount max double", R + "VALUE_OUT_OF_RANGE", _set_amount(1.7976931348623157e308)),
    ("amount 1e300", R + "VALUE_OUT_OF_RANGE", _set_amount(1e300)),
    ("amount over declared max", R + "VALUE_OUT_OF_RANGE", _set_amount(10_000_000.5)),
    ("amount negative", R + "VALUE_OUT_OF_RANGE", _set_amount(-5.0)),
    ("amount lowest double", R + "VALUE_OUT_OF_RANGE", _set_amount(-1.7976931348623157e308)),
    ("label 2", R + "LABEL_OUT_OF_DOMAIN", _label(2)),
    ("label -1", R + "LABEL_OUT_OF_DOMAIN", _label(-1)),
    ("label int64 max", R + "LABEL_OUT_OF_DOMAIN", _label(2**63 - 1)),
    ("label int64 min", R + "LABEL_OUT_OF_DOMAIN", _label(-(2**63))),
    ("label missing", R + "LABEL_OUT_OF_DOMAIN", _label(None)),
    ("time year 3000", R + "EVENT_TIME_OUT_OF_RANGE", _time(32_503_680_000)),
    ("time 2**62 s", R + "EVENT_TIME_OUT_OF_RANGE", _time(2**62)),
    ("time int64 max s", R + "EVENT_TIME_OUT_OF_RANGE", _time(2**63 - 1)),
    ("time -2**62 s", R + "EVENT_TIME_OUT_OF_RANGE", _time(-(2**62))),
    ("time int64 min s", R + "EVENT_TIME_OUT_OF_RANGE", _time(-(2**63))),
    ("time 1899", R + "EVENT_TIME_OUT_OF_RANGE", _time(-2_208_988_801)),
    ("time 2200", R + "EVENT_TIME_OUT_OF_RANGE", _time(7_258_118_400)),
    ("time nanos negative", R + "EVENT_TIME_OUT_OF_RANGE", _time(1_700_000_000, -1)),
    ("time nanos 1e9", R + "EVENT_TIME_OUT_OF_RANGE", _time(1_700_000_000, 1_000_000_000)),
    ("time nanos int32 max", R + "EVENT_TIME_OUT_OF_RANGE", _time(1_700_000_000, 2**31 - 1)),
    ("no event time", R + "MISSING_EVENT_TIME", lambda rng, ev: ev.ClearField("event_time")),
    ("no event id", R + "MISSING_EVENT_ID", lambda rng, ev: setattr(ev, "event_id", "")),
    ("no card_id", R + "MISSING_ENTITY_KEY", lambda rng, ev: ev.entities.pop("card_id")),
    ("no merchant_id", R + "MISSING_ENTITY_KEY", lambda rng, ev: ev.entities.pop("merchant_id")),
    ("empty card_id", R + "MISSING_ENTITY_KEY", lambda rng, ev: ev.entities.update(card_id="")),
    ("card_id 5000 chars", R + "INVALID_KEY", lambda rng, ev: ev.entities.update(card_id="c" * 5000)),
    ("event_id 2000 chars", R + "INVALID_KEY", lambda rng, ev: setattr(ev, "event_id", "e" * 2000)),
    ("schema_version 2", R + "UNKNOWN_SCHEMA_VERSION", lambda rng, ev: setattr(ev, "schema_version", 2)),
    ("schema_version 0", R + "UNKNOWN_SCHEMA_VERSION", lambda rng, ev: setattr(ev, "schema_version", 0)),
    (
        "schema_version uint32 max",
        R + "UNKNOWN_SCHEMA_VERSION",
        lambda rng, ev: setattr(ev, "schema_version", 2**32 - 1),
    ),
    ("unknown event type", R + "UNKNOWN_EVENT_TYPE", lambda rng, ev: setattr(ev, "event_type", "refund")),
    ("empty event type", R + "UNKNOWN_EVENT_TYPE", lambda rng, ev: setattr(ev, "event_type", "")),
]


def _undecodable(data: bytes) -> bool:
    try:
        events_pb2.Event.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return True
    return False


def _random_bytes(rng: random.Random, base: bytes) -> bytes | None:
    data = rng.randbytes(rng.randint(1, 400))
    return data if _undecodable(data) else None


def _truncated(rng: random.Random, base: bytes) -> bytes | None:
    data = base[: rng.randint(1, len(base) - 1)]
    return data if _undecodable(data) else None  # a cut on a field boundary still parses: not this class


def _bit_flipped(rng: random.Random, base: bytes) -> bytes | None:
    data = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data) if _undecodable(bytes(data)) else None


BYTE_CLASSES: list[tuple[str, Callable[[random.Random, bytes], bytes | None]]] = [
    ("random bytes", _random_bytes),
    ("truncated protobuf", _truncated),
    ("bit-flipped protobuf", _bit_flipped),
]


def malformed(count: int, valid: list[Message], seed: int, oversized: int = 4) -> list[tuple[str, Message]]:
    """`count` malformed messages cycling through every class, plus `oversized` near-1 MB ones."""
    rng = random.Random(seed)
    bases = [m for m in valid if events_pb2.Event.FromString(m.value).event_type == "transaction"]
    out: list[tuple[str, Message]] = []
    n_classes = len(CLASSES) + len(BYTE_CLASSES)
    while len(out) < count:
        i = len(out)
        base = bases[rng.randrange(len(bases))]
        k = i % n_classes
        if k < len(CLASSES):
            name, reason, mutate = CLASSES[k]
            ev = events_pb2.Event.FromString(base.value)
            ev.event_id = f"fuzz-{seed}-{i}"  # unique bytes per message, and never a valid event's id
            mutate(rng, ev)
            out.append((name, Message(base.key, ev.SerializeToString(), None, reason)))
            continue
        name, make = BYTE_CLASSES[k - len(CLASSES)]
        data = make(rng, base.value)
        if data is not None and all(data != m.value for _, m in out[-n_classes * 4 :]):
            out.append((name, Message(base.key, data, None, R + "UNDECODABLE")))
    for j in range(oversized):  # close to the broker's 1 MB limit: too large to dead-letter as is
        data = b"\xff" + rng.randbytes(990_000 - j)
        out.append(("oversized payload", Message(b"c1", data, None, R + "UNDECODABLE")))
    out.append(("empty message", Message(b"c1", b"", None, R + "UNDECODABLE")))
    return out


def run(stack: PrivateStack, workdir: Path, count: int = 2_100, events: int = 6_000) -> DrillResult:
    result = DrillResult("fuzz-events", f"{count} malformed messages of every class mixed with valid events")
    pipe = Pipeline(stack, "fuzz", workdir)
    valid = sim_messages(events, seed=51, cards=400, merchants=60)
    bad = malformed(count, valid, seed=52)
    rng = random.Random(53)
    mixed = list(valid)
    for _, m in bad:  # anywhere in the stream (valid events keep their relative order)
        mixed.insert(rng.randrange(len(mixed) + 1), m)
    try:
        pipe.start_worker()
        pipe.produce(mixed)
        caught_up = pipe.wait_caught_up()
        dead = pipe.dead_letters()
        expected = Counter((m.expected_reason or "", m.value) for _, m in bad)
        got = Counter(dead)
        wrong = [(name, m.expected_reason) for name, m in bad if got[(m.expected_reason or "", m.value)] == 0]
        result.figures.update(
            malformed_sent=len(bad),
            malformed_by_class=dict(Counter(name for name, _ in bad)),
            caught_up_s=round(caught_up, 1),
            supervisor_restarts=pipe.supervisor_restarts(),
            manual_restarts=pipe.worker_starts - 1,
            dead_letters_with_expected_reason_and_bytes=sum((expected & got).values()),
            dead_letters_unexpected=sum((got - expected).values()),
            malformed_missing_or_wrong_reason=dict(Counter(f"{n} -> {r}" for n, r in wrong)),
            worker_tracebacks=pipe.procs.log(WORKER).count("Traceback"),
            **pipe.stream_figures(),
        )
        judge_stream(result, dead_expected=dict(sorted(Counter(m.expected_reason or "" for _, m in bad).items())))
        result.bar(not wrong, f"{len(wrong)} malformed messages not dead-lettered with their reason")
        result.bar(result.figures["dead_letters_unexpected"] == 0, "dead letters nobody expected")
        result.bar(result.figures["worker_tracebacks"] == 0, "tracebacks in the worker's log")
    finally:
        codes = pipe.procs.stop_all()
    result.bar(codes.get(WORKER) == 0, f"the worker did not stop cleanly on SIGTERM: {codes}")
    return result
