"""A single-node Apache Kafka broker in KRaft mode, from Maven Central jars, run with the machine's Java."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path

from fti_cli.stack.errors import StackError
from fti_cli.stack.output import Say
from fti_cli.stack.settings import StackSettings

__all__ = [
    "KAFKA_MAIN",
    "broker_command",
    "cluster_id",
    "format_command",
    "format_storage",
    "resolve_classpath",
    "write_config",
]

KAFKA_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"


def _resource(name: str) -> Path:
    return Path(str(resources.files("fti_cli.stack") / name))


def resolve_classpath(settings: StackSettings, say: Say) -> str:
    """The broker's classpath, resolved by Maven once and cached beside the stack data."""
    cache = settings.root / f"kafka-{settings.kafka_version}.classpath"
    if cache.exists():
        cp = cache.read_text().strip()
        if cp and all(Path(j).exists() for j in cp.split(":")):
            return cp
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("mvn not found: install Maven (apt-get install maven) to fetch the Kafka jars")
    say(f"resolving Apache Kafka {settings.kafka_version} jars with Maven (first run downloads ~45 MB to ~/.m2)")
    cache.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603 - fixed argv
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_resource("pom.xml")),
            "dependency:build-classpath",
            f"-Dkafka.version={settings.kafka_version}",
            f"-Dmdep.outputFile={cache}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise StackError("Maven could not resolve the Kafka jars:\n  " + "\n  ".join(tail))
    return cache.read_text().strip()


def write_config(settings: StackSettings) -> Path:
    host, port = settings.kafka_host_port
    kdir = settings.root / "kafka"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{settings.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(kdir / "data"),
        # Topics are created by the pipelines with explicit partition counts, never implicitly.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Single-node development broker: join consumer groups without the default 3 s delay.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
        "delete.topic.enable": "true",
    }
    kdir.mkdir(parents=True, exist_ok=True)
    path = kdir / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes in URL-safe base64 without padding, as Kafka's own."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def format_command(java: str, classpath: str, config: Path, cid: str) -> list[str]:
    # `--cluster-id=ID`, not `-t ID`: one id in 64 begins with '-', which the tool's argument
    # parser takes for an option ("expected one argument"), and `fti stack up` failed.
    return [java, "-cp", classpath, _STORAGE_TOOL, "format", f"--cluster-id={cid}", f"--config={config}"]


def format_storage(java: str, classpath: str, config: Path, settings: StackSettings) -> None:
    """Format the KRaft log directory once; a formatted directory is left as it is."""
    if (settings.root / "kafka" / "data" / "meta.properties").exists():
        return
    result = subprocess.run(  # noqa: S603 - fixed argv
        format_command(java, classpath, config, cluster_id()),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"formatting the Kafka log directory failed: {result.stderr.strip() or result.stdout.strip()}")


def broker_command(java: str, classpath: str, config: Path, settings: StackSettings) -> list[str]:
    logs = settings.root / "kafka"
    return [
        java,
        f"-Xmx{settings.kafka_heap}",
        "-Xms256m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={_resource('log4j2.properties')}",
        "-cp",
        classpath,
        KAFKA_MAIN,
        str(config),
    ]
