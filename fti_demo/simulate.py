"""Demo event generator: card transactions with delayed fraud labels, one user of the system.

Fraud is a pattern a model can learn from the demo views: a compromised card makes a burst
of larger transactions at many different merchants; labels for transactions in a burst say
`is_fraud=1`. Keys are skewed (a few busy cards and merchants), about `ooo_fraction` of the
events arrive out of order (within the views' allowed lateness), a few arrive later than
that, and about `dup_fraction` are sent twice. Event times are simulated (`sim_rate`
transactions per simulated second) and end near the current time.
"""

from __future__ import annotations

import heapq
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.values import to_value
from fti.v1 import events_pb2

if TYPE_CHECKING:
    from fti_core.settings import FtiSettings

__all__ = ["SimConfig", "SimEvent", "generate", "simulate"]


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7
    drift: bool = False
    sim_rate: float = 20.0  # transactions per simulated second
    cards: int = 2000
    merchants: int = 300
    fraud_card_fraction: float = 0.03
    ooo_fraction: float = 0.10
    late_fraction: float = 0.003
    dup_fraction: float = 0.01
    label_fraction: float = 0.15
    end_ms: int | None = None  # simulated time of the last transaction; default now


@dataclass(frozen=True, slots=True)
class SimEvent:
    key: bytes
    value: bytes
    event_type: str
    event_id: str
    time_ms: int


@dataclass
class _Burst:
    card: str
    left: int
    merchants: list[str] = field(default_factory=list)


def _event(
    rng: random.Random, event_type: str, t_ms: int, entities: dict[str, str], values: dict[str, float | int | str]
) -> SimEvent:
    ts = Timestamp()
    ts.FromMilliseconds(t_ms)
    eid = uuid.UUID(int=rng.getrandbits(128)).hex
    ev = events_pb2.Event(
        event_id=eid,
        event_type=event_type,
        event_time=ts,
        entities=entities,
        values={k: to_value(v) for k, v in values.items()},
        schema_version=1,
        source="fti-simulate",
    )
    return SimEvent(entities["card_id"].encode(), ev.SerializeToString(), event_type, eid, t_ms)


class _World:
    def __init__(self, cfg: SimConfig, rng: random.Random) -> None:
        self.cfg, self.rng = cfg, rng
        self.cards = [f"c{i:05d}" for i in range(cfg.cards)]
        self.merchants = [f"m{i:04d}" for i in range(cfg.merchants)]
        # Zipf-like weights: a few busy cards and merchants.
        self.card_w = [1.0 / (i + 1) ** 0.8 for i in range(cfg.cards)]
        self.merch_w = [1.0 / (i + 1) ** 1.1 for i in range(cfg.merchants)]
        self.fraud_cards = set(rng.sample(self.cards, max(1, int(cfg.cards * cfg.fraud_card_fraction))))
        self.bursts: list[_Burst] = []

    def transaction(self, t_ms: int) -> tuple[SimEvent, bool]:
        rng, drift = self.rng, self.cfg.drift
        if self.bursts and rng.random() < 0.25:
            burst = rng.choice(self.bursts)
            burst.left -= 1
            if burst.left <= 0:
                self.bursts.remove(burst)
            card, fraud = burst.card, True
            merchant = rng.choice(self.merchants)  # many different merchants
            amount = rng.lognormvariate(5.2 if drift else 4.8, 0.6)
        else:
            card = rng.choices(self.cards, self.card_w)[0]
            fraud = False
            merchant = rng.choices(self.merchants, self.merch_w)[0]
            amount = rng.lognormvariate(3.9 if drift else 3.4, 0.9)
            if card in self.fraud_cards and rng.random() < 0.05:
                self.bursts.append(_Burst(card, rng.randint(8, 20)))
        values: dict[str, float | int | str] = {"amount": round(amount, 2), "merchant_id": merchant}
        ev = _event(rng, "transaction", t_ms, {"card_id": card, "merchant_id": merchant}, values)
        return ev, fraud

    def label(self, txn: SimEvent, fraud: bool) -> SimEvent:
        noisy = self.rng.random() < 0.02
        is_fraud = int(fraud != noisy)
        delay = self.rng.randint(20_000, 180_000)
        # The label names every entity of the transaction it judges, so a model can use the
        # features of each (card and merchant) as of the label's time.
        entities = dict(events_pb2.Event.FromString(txn.value).entities)
        return _event(self.rng, "fraud_label", txn.time_ms + delay, entities, {"is_fraud": is_fraud})


def _arrival_delay(cfg: SimConfig, rng: random.Random) -> int:
    u = rng.random()
    if u < cfg.late_fraction:
        return rng.randint(200_000, 480_000)  # beyond the demo views' 2 minutes of allowed lateness
    if u < cfg.late_fraction + cfg.ooo_fraction:
        return rng.randint(1_000, 90_000)
    return 0


def generate(count: int, cfg: SimConfig | None = None) -> Iterator[SimEvent]:
    """`count` transactions plus labels and duplicates, in arrival (produce) order. Deterministic per seed."""
    cfg = cfg or SimConfig()
    rng = random.Random(cfg.seed)
    world = _World(cfg, rng)
    step_ms = 1000.0 / cfg.sim_rate
    end = cfg.end_ms if cfg.end_ms is not None else int(time.time() * 1000)
    start = end - int(count * step_ms)
    pending: list[tuple[int, int, SimEvent]] = []
    seq = 0

    def push(ev: SimEvent, arrival: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(pending, (arrival, seq, ev))

    for i in range(count):
        t = start + int(i * step_ms) + rng.randint(0, int(step_ms))
        txn, fraud = world.transaction(t)
        arrival = t + _arrival_delay(cfg, rng)
        push(txn, arrival)
        if rng.random() < cfg.dup_fraction:
            push(txn, arrival + rng.randint(0, 20_000))
        if rng.random() < (0.6 if fraud else cfg.label_fraction):
            label = world.label(txn, fraud)
            push(label, label.time_ms)
        while pending and pending[0][0] <= t:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def _produce(producer: Any, topic: str, ev: SimEvent) -> None:
    while True:
        try:
            producer.produce(topic, key=ev.key, value=ev.value)
            producer.poll(0)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.1)


def _producer(settings: FtiSettings, bootstrap: str | None) -> Any:
    from confluent_kafka import Producer

    conf = settings.confluent_config()
    if bootstrap:
        conf["bootstrap.servers"] = bootstrap
    conf.update({"linger.ms": "5", "enable.idempotence": "true", "compression.type": "lz4"})
    return Producer(conf)


@click.command()
@click.option("--rate", type=float, default=1000.0, show_default=True, help="Messages per second to produce.")
@click.option("--count", type=int, default=None, help="Transactions to generate.")
@click.option("--duration", type=float, default=None, help="Seconds to run (count = rate * duration).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--drift", is_flag=True, help="Shift amounts and fraud pattern (for a second model version).")
@click.option(
    "--ends-ago",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds before now of the last transaction's event time (so a later batch follows this one).",
)
@click.option("--topic", default=None, help="Raw topic; default FTI_EVENTS_TOPIC.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers; default FTI_KAFKA_BOOTSTRAP_SERVERS.")
def simulate(
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int,
    drift: bool,
    ends_ago: float,
    topic: str | None,
    bootstrap: str | None,
) -> None:
    """Produce demo card transactions and fraud labels to the raw topic."""
    from tqdm import tqdm

    from fti_core.settings import FtiSettings, load_settings

    if (count is None) == (duration is None):
        raise click.UsageError("give exactly one of --count or --duration")
    n = count if count is not None else int(rate * (duration or 0))
    settings = load_settings(FtiSettings)
    topic = topic or settings.events_topic
    producer = _producer(settings, bootstrap)
    sent = 0
    t0 = time.monotonic()
    with tqdm(unit="msg", desc=f"simulate -> {topic}") as bar:
        end_ms = int(time.time() * 1000 - ends_ago * 1000)
        for ev in generate(n, SimConfig(seed=seed, drift=drift, end_ms=end_ms)):
            _produce(producer, topic, ev)
            sent += 1
            bar.update(1)
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0.01:
                time.sleep(ahead)
    remaining = producer.flush(30)
    if remaining:
        raise click.ClickException(f"{remaining} messages were not delivered")
    click.echo(f"produced {sent} messages to {topic}")
