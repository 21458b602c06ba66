"""`fti demo`: the whole FTI loop on this machine, step by step, with a report at the end.

stack up -> simulated events -> feature worker -> snapshot -> train v1 -> promote ->
serve + predictions -> drifted events -> snapshot -> train v2 -> the promoter promotes it
from its event -> the server swaps to v2 under steady client load -> report -> stop all.
Every run uses its own topics, Redis prefix and data folder, so runs never mix.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import click
import grpc
import redis
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurestore.snapshots import SnapshotStore
from fti.v1 import inference_pb2, inference_pb2_grpc
from fti_core.settings import CLICK_CONFIG_KEY, CONFIG_ENV, FtiSettings, load_settings
from fti_demo.load import PredictionLoad
from fti_demo.processes import DemoStepError, Processes
from fti_demo.simulate import SimConfig
from registry.models import ModelRegistry

__all__ = ["demo"]

MODEL = "fraud"
STEPS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _step(n: int, text: str) -> None:
    click.secho(f"\n[{n:2}/{STEPS}] {text}", bold=True)


def _wait(what: str, check: Callable[[], bool], timeout_s: float, procs: Processes) -> float:
    started = time.monotonic()
    while not check():
        procs.check_alive()
        if time.monotonic() - started > timeout_s:
            raise DemoStepError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - started


class LagProbe:
    """How far a consumer group is behind, across every topic it has committed on.

    One admin client and one consumer for the whole demo: librdkafka clients are costly to
    create and tear down, and doing so in a tight loop is asking for trouble.
    """

    def __init__(self, settings: FtiSettings, group: str, required_topic: str) -> None:
        conf: dict[str, str | int | float | bool] = {**settings.confluent_config()}
        self._admin = AdminClient(conf)
        self._probe = Consumer({**conf, "group.id": f"{group}-lag-probe", "enable.auto.commit": False})
        self._group = group
        self._required = required_topic

    def lag(self) -> int | None:
        """Uncommitted events; None until the group has committed on the raw topic."""
        request = [ConsumerGroupTopicPartitions(self._group)]
        result = self._admin.list_consumer_group_offsets(request)[self._group].result(10)
        committed = {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}
        if not any(topic == self._required for topic, _ in committed):
            return None
        md = self._probe.list_topics(timeout=10)
        lag = 0
        for topic in {t for t, _ in committed}:
            for p in md.topics[topic].partitions:
                _, high = self._probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                lag += max(0, high - committed.get((topic, p), 0))
        return lag

    def close(self) -> None:
        self._probe.close()


def _healthy(target: str) -> bool:
    with grpc.insecure_channel(target) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def _sample_entities(redis_url: str, prefix: str, n: int) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url)
    cards = [
        k.decode().rsplit(":", 1)[1] for k in client.scan_iter(match=f"{prefix}:tiles:card_activity:v1:*", count=500)
    ]
    merchants = [
        k.decode().rsplit(":", 1)[1]
        for k in client.scan_iter(match=f"{prefix}:tiles:merchant_activity:v1:*", count=500)
    ]
    client.close()
    if not cards or not merchants:
        raise DemoStepError("no features in Redis to build requests from")
    return [{"card_id": cards[i % len(cards)], "merchant_id": merchants[i % len(merchants)]} for i in range(n)]


class Demo:
    def __init__(self, events: int, rate: float, keep: bool) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        base = load_settings(FtiSettings)
        self.dir = (base.data_dir / "demo" / self.run_id).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.prefix = f"fti-demo-{self.run_id}"
        env = dict(os.environ)  # the child processes' environment; this process's own is left alone
        ctx = click.get_current_context(silent=True)
        config = ctx.meta.get(CLICK_CONFIG_KEY) if ctx is not None else None
        if config is not None:  # `fti --config FILE demo`: the children read the same file
            env[CONFIG_ENV] = str(config)
        env.update(
            # The stack is shared by every run: keep it where `fti stack` looks by default.
            FTI_STACK_DIR=str((base.data_dir / "stack").resolve()),
            FTI_DATA_DIR=str(self.dir),
            FTI_EVENTS_TOPIC=f"fti.demo.{self.run_id}.events",
            FTI_DLQ_TOPIC=f"fti.demo.{self.run_id}.events.dlq",
            FTI_MODELS_TOPIC=f"fti.demo.{self.run_id}.models",
            FTI_WORKER_APP_ID=f"fti-demo-{self.run_id}",
            FTI_REDIS_PREFIX=self.prefix,
            FTI_PROMOTER_GROUP_ID=f"fti-demo-{self.run_id}-promoter",
            FTI_PROMOTER_MARGIN="0",
            FTI_SERVE_METRICS_PORT="0",  # a free port, so runs never collide
            FTI_DEFINITIONS_PATH=str(Path(__file__).resolve().parent.parent / "examples" / "fraud" / "features.yaml"),
        )
        self.settings = load_settings(FtiSettings, environ=env)
        self.env = env
        self.events = events
        self.rate = rate
        self.keep = keep
        self.procs = Processes(env, self.dir)
        self.report: dict[str, object] = {"run_id": self.run_id, "data_dir": str(self.dir)}
        self.stack_started = False

    def run(self) -> dict[str, object]:
        try:
            self._run()
        finally:
            self.procs.stop_all()
            if self.stack_started and not self.keep:
                click.echo("\nstopping the stack this demo started")
                self.procs.run("stack-down", ["stack", "down"])
        return self.report

    def _run(self) -> None:
        _step(1, "stack: a local Kafka (KRaft) and Redis")
        status = self.procs.run("stack-status", ["stack", "status"]) if self._stack_up() else ""
        if not status:
            self.procs.run("stack-up", ["stack", "up"])
            self.stack_started = True
        self.procs.run("topics", ["stack", "topics"])

        _step(2, "feature worker: raw events -> Redis + parquet")
        self.procs.start("features-worker", ["features", "worker"])

        _step(3, f"simulate {self.events} card transactions with delayed fraud labels")
        t0 = time.monotonic()
        # The first batch ends in event time where the drifted one begins, so the drifted events
        # follow it instead of arriving as late events (their own keys' watermarks are ahead).
        ends_ago = (self.events // 2) / SimConfig().sim_rate
        self.procs.run(
            "simulate-1",
            [
                "simulate",
                "--rate",
                str(self.rate),
                "--count",
                str(self.events),
                "--seed",
                "1",
                "--ends-ago",
                str(ends_ago),
            ],
        )
        self._wait_features("the first batch")
        self.report["events_phase1"] = self.events
        self.report["phase1_ingest_s"] = round(time.monotonic() - t0, 1)

        _step(4, "snapshot the offline store and train model v1")
        v1 = self._snapshot_and_train()

        _step(5, "promote v1 to production by hand (an operator's command)")
        self.procs.run(
            "promote-v1", ["registry", "promote", MODEL, str(v1), "--alias", "production", "--reason", "demo"]
        )

        _step(6, "start the promoter and the gRPC inference server")
        self.procs.start("promoter", ["registry", "promoter", "--alias", "production"])
        target = f"localhost:{self.port}"
        self.procs.start("serve", ["serve", "--model", MODEL, "--alias", "production", "--port", str(self.port)])
        took = _wait("the server to report SERVING", lambda: _healthy(target), 90, self.procs)
        click.echo(f"    SERVING after {took:.1f} s")

        _step(7, "predictions from request-time features")
        entities = _sample_entities(self.settings.redis_url.get_secret_value(), self.prefix, 50)
        self._print_predictions(target, entities[:3])
        load = PredictionLoad(target, MODEL, entities, rate=200)
        load.start()
        click.echo("    a client now calls Predict continuously (200 requests/s)")

        _step(8, f"simulate {self.events // 2} more events with drift")
        self.procs.run(
            "simulate-2",
            ["simulate", "--rate", str(self.rate), "--count", str(self.events // 2), "--seed", "2", "--drift"],
        )
        self._wait_features("the drifted batch")

        _step(9, "snapshot again and train model v2 (published -> model event)")
        published_at = time.time() * 1000
        v2 = self._snapshot_and_train()

        _step(10, "the promoter promotes v2 from its event; the server swaps under load")
        registry = ModelRegistry.from_uri(self.settings.registry_root)
        _wait("the promoter to decide on v2", lambda: self._decided(registry, v2), 120, self.procs)
        holder = registry.resolve(MODEL, "production")
        if holder is None or holder.version != v2:
            raise DemoStepError(f"the promoter kept v{v1}: see {self.dir}/promoter.log for its figures")
        _wait("responses from v2", lambda: v2 in load.stats.first_seen_ms, 60, self.procs)
        time.sleep(2)  # keep calling on v2 for a moment, so "no failed request" covers after the swap too
        stats = load.stop()
        self.report["swap_ms_from_publish"] = round(stats.first_seen_ms[v2] - published_at)

        _step(11, "report")
        self.report.update(
            requests_ok=stats.ok,
            requests_failed=stats.failed,
            served_versions=dict(stats.versions),
            latency_p50_ms=round(stats.percentile(0.5), 2),
            latency_p99_ms=round(stats.percentile(0.99), 2),
        )
        self._print_report()
        if stats.failed:
            raise DemoStepError(f"{stats.failed} requests failed during the run: {dict(stats.errors)}")

        _step(12, "stopping the pipelines")

    def _stack_up(self) -> bool:
        try:
            self.procs.run("stack-status", ["stack", "status"])
        except DemoStepError:
            return False
        return True

    def _wait_features(self, what: str) -> None:
        probe = LagProbe(self.settings, self.env["FTI_WORKER_APP_ID"], self.settings.events_topic)
        zeros = 0

        def drained() -> bool:
            nonlocal zeros
            # Two polls in a row at zero: the repartition topic may get its first commit a beat later.
            zeros = zeros + 1 if probe.lag() == 0 else 0
            return zeros >= 2

        try:
            took = _wait(f"the worker to process {what}", drained, 300, self.procs)
        finally:
            probe.close()
        click.echo(f"    worker caught up {took:.1f} s after the last event was produced")

    def _snapshot_and_train(self) -> int:
        self.procs.run("snapshot", ["features", "snapshot", "create"])
        snapshot = SnapshotStore(self.settings.offline_root).latest()
        if snapshot is None:
            raise DemoStepError("no snapshot was created")
        self.procs.run(f"train-{snapshot.id}", ["train", "--model", MODEL, "--snapshot", snapshot.id, "--seed", "7"])
        registry = ModelRegistry.from_uri(self.settings.registry_root)
        latest = registry.versions(MODEL)[-1]
        metrics = {k: round(v, 4) for k, v in latest.metrics.items()}
        rows: dict[str, int] = {}
        for f in snapshot.files:
            label = f"{f.name}:{f.version}" if f.kind == "features" else f"{f.name} events"
            rows[label] = rows.get(label, 0) + f.rows
        self.report[f"v{latest.version}"] = {"snapshot": snapshot.id, "snapshot_rows": rows, "metrics": metrics}
        click.echo(f"    published {MODEL} v{latest.version}: {metrics}")
        return latest.version

    @staticmethod
    def _decided(registry: ModelRegistry, version: int) -> bool:
        holder = registry.resolve(MODEL, "production")
        if holder is not None and holder.version == version:
            return True
        return any(m.to_version == version for m in registry.alias_history(MODEL, "production"))

    @staticmethod
    def _print_predictions(target: str, entities: list[dict[str, str]]) -> None:
        with grpc.insecure_channel(target) as ch:
            stub = inference_pb2_grpc.InferenceServiceStub(ch)
            for ent in entities:
                r = stub.Predict(inference_pb2.PredictRequest(model=MODEL, entities=ent), timeout=5)
                missing = sum(1 for f in r.features if f.status != inference_pb2.FEATURE_STATUS_OK)
                click.echo(
                    f"    {ent} -> score {r.score:.4f} from {r.model} v{r.model_version} "
                    f"({len(r.features)} features, {missing} missing or stale)"
                )

    def _print_report(self) -> None:
        for key, value in self.report.items():
            click.echo(f"    {key:22} {json.dumps(value)}")
        (self.dir / "report.json").write_text(json.dumps(self.report, indent=2))
        click.echo(f"    (also in {self.dir / 'report.json'})")


@click.command()
@click.option(
    "--events", default=20_000, show_default=True, help="Transactions in the first batch (half as many drifted)."
)
@click.option("--rate", default=4000.0, show_default=True, help="Events per second the simulator produces.")
@click.option("--keep-stack", is_flag=True, help="Leave Kafka and Redis running afterwards.")
def demo(events: int, rate: float, keep_stack: bool) -> None:
    """Run the whole FTI loop end to end on this machine, then stop everything it started."""
    started = time.monotonic()
    try:
        Demo(events, rate, keep_stack).run()
    except DemoStepError as exc:
        click.secho(f"\ndemo failed: {exc}", fg="red", err=True)
        sys.exit(1)
    click.secho(f"\ndemo succeeded in {time.monotonic() - started:.0f} s", fg="green", bold=True)
