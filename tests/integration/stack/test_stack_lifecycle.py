"""`fti stack up | status | down` on ports of its own: idempotent up, down leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fti_cli.stack import kafka
from fti_cli.stack.processes import ManagedProcess, is_ours, pid_alive, port_open
from fti_cli.stack.redis_server import redis_command, redis_marker
from fti_cli.stack.settings import StackSettings

from ...net import free_port
from ...waits import wait_for


def _fti(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fti_cli", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _pids(status_out: str) -> dict[str, int]:
    out = {}
    for line in status_out.splitlines():
        if "(pid " in line:
            out[line.split()[0]] = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
    return out


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    kafka, controller, redis_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTI_")}
    env.update(
        FTI_DATA_DIR=str(tmp_path / "data"),
        FTI_KAFKA_BOOTSTRAP_SERVERS=f"localhost:{kafka}",
        FTI_STACK_KAFKA_CONTROLLER_PORT=str(controller),
        FTI_STACK_KAFKA_HEAP="384m",
        FTI_REDIS_URL=f"redis://localhost:{redis_port}/0",
    )
    yield env
    _fti(env, "stack", "down")


def test_up_status_down(stack_env: dict[str, str]) -> None:
    bootstrap = stack_env["FTI_KAFKA_BOOTSTRAP_SERVERS"]
    redis_url = stack_env["FTI_REDIS_URL"]
    kafka_port = int(bootstrap.rsplit(":", 1)[1])
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])

    first = _fti(stack_env, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert f"FTI_KAFKA_BOOTSTRAP_SERVERS={bootstrap}" in first.stdout
    assert "created topic fti.events (4 partitions)" in first.stderr
    pids = _pids(first.stdout)
    assert set(pids) == {"kafka", "redis"}

    # The broker works for real clients, and the pipeline topics have their declared partitions.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics["fti.events"].partitions) == 4 and len(topics["fti.models"].partitions) == 1
    admin.create_topics([NewTopic("smoke", num_partitions=2, replication_factor=1)])["smoke"].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("smoke", b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "smoke", "auto.offset.reset": "earliest"})
    consumer.subscribe(["smoke"])
    rec = None
    for _ in range(30):
        rec = consumer.poll(1)
        if rec is not None:
            break
    consumer.close()
    assert rec is not None and rec.value() == b"hello"
    # Auto-creation is off: topics exist only when created with explicit partitions.
    assert "never-created" not in admin.list_topics("never-created", timeout=5).topics or (
        admin.list_topics("never-created", timeout=5).topics["never-created"].error is not None
    )
    assert redis.Redis.from_url(redis_url).ping()

    second = _fti(stack_env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "kafka: already running" in second.stderr and "redis: already running" in second.stderr
    assert _pids(second.stdout) == pids, "a second up must change nothing"

    status = _fti(stack_env, "stack", "status")
    assert status.returncode == 0 and _pids(status.stdout) == pids

    down = _fti(stack_env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids.values())
    assert not port_open("localhost", kafka_port) and not port_open("localhost", redis_port)
    after = _fti(stack_env, "stack", "status")
    assert after.returncode == 1 and "stopped" in after.stdout


def test_down_leaves_alone_what_it_did_not_start(stack_env: dict[str, str], tmp_path: Path) -> None:
    redis_port = int(stack_env["FTI_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    outsider = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            if port_open("localhost", redis_port):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        status = _fti(stack_env, "stack", "status")
        assert "redis  external" in status.stdout
        down = _fti(stack_env, "stack", "down")
        assert down.returncode == 0
        assert outsider.poll() is None, "down stopped a Redis it did not start"
    finally:
        outsider.terminate()
        outsider.wait(10)


def test_kafka_storage_format_takes_a_cluster_id_that_begins_with_a_dash(tmp_path: Path) -> None:
    # One random id in 64 begins with '-': given as `-t ID`, the tool took it for an option.
    java = shutil.which("java")
    assert java is not None
    classpath = kafka.resolve_classpath(StackSettings(), lambda _msg: None)  # cached by `fti stack up`
    settings = StackSettings(dir=tmp_path)
    cid = "-" + kafka.cluster_id()[1:]
    result = subprocess.run(
        kafka.format_command(java, classpath, kafka.write_config(settings), cid),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"cluster.id={cid}" in (tmp_path / "kafka" / "data" / "meta.properties").read_text()


def test_a_redis_it_starts_is_recognised_from_its_first_moment(tmp_path: Path) -> None:
    # `up` checks that what it started is still alive between readiness polls. The marker was
    # the ":<port>" of the title redis-server gives itself once running, so a check in its first
    # milliseconds said "redis exited during start-up" of a Redis that was fine (seen in a drill).
    exe = shutil.which("redis-server")
    assert exe is not None
    settings = StackSettings(dir=tmp_path, redis_url=f"redis://localhost:{free_port()}/0")  # type: ignore[arg-type]
    cmd = redis_command(exe, settings)
    marker = redis_marker(settings)
    assert marker in " ".join(cmd)  # the command line before redis-server has run any code
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=1)
        wait_for(lambda: _answers(client), what="the private redis to answer", timeout_s=30)
        assert is_ours(ManagedProcess("redis", proc.pid, "", marker))  # and once it runs
    finally:
        proc.kill()
        proc.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
