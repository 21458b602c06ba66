"""`fti stack up | down | status`: a local Kafka (KRaft) and Redis, no Docker."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

import redis

from fti_cli.stack import kafka
from fti_cli.stack.errors import StackError
from fti_cli.stack.output import Say
from fti_cli.stack.processes import ManagedProcess, StateFile, is_ours, port_open, spawn, terminate
from fti_cli.stack.redis_server import redis_command, redis_marker
from fti_cli.stack.settings import StackSettings
from fti_cli.stack.topics import ensure_topics, kafka_ready

__all__ = ["ServiceStatus", "StackManager"]

_INSTALL_HINTS = {
    "java": "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)",
    "mvn": "install Maven (apt-get install maven)",
    "redis-server": "install Redis (apt-get install redis-server)",
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    state: str  # "running" (ours), "external" (answering, not started by us), "stopped"
    pid: int | None = None


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"{tool} not found on PATH: {_INSTALL_HINTS[tool]}")
    return path


class StackManager:
    def __init__(self, settings: StackSettings, say: Say = print) -> None:
        self.settings = settings
        self.say = say
        self.state = StateFile(settings.root / "state.json")

    def status(self) -> list[ServiceStatus]:
        procs = self.state.load()
        out = []
        for name, (host, port) in self._endpoints().items():
            address = f"{host}:{port}"
            proc = procs.get(name)
            if proc is not None and is_ours(proc):
                out.append(ServiceStatus(name, address, "running", proc.pid))
            elif port_open(host, port):
                out.append(ServiceStatus(name, address, "external"))
            else:
                out.append(ServiceStatus(name, address, "stopped"))
        return out

    def up(self) -> list[ServiceStatus]:
        # Check every tool before starting anything, so a missing one changes nothing.
        current = {s.name: s for s in self.status()}
        needs = [n for n, s in current.items() if s.state == "stopped"]
        tools = {t: require(t) for t in self._tools_for(needs)}
        procs = {n: p for n, p in self.state.load().items() if current[n].state == "running"}
        for name, s in current.items():
            if s.state != "stopped":
                self.say(f"{name}: already {s.state} at {s.address}")
        if "kafka" in needs:
            procs["kafka"] = self._start_kafka(tools["java"])
            self.state.save(procs)
        if "redis" in needs:
            procs["redis"] = self._start_redis(tools["redis-server"])
            self.state.save(procs)
        self._wait_ready()
        created = ensure_topics(self.settings)
        for spec in self.settings.topics.pipeline():
            if spec.name in created:
                self.say(f"kafka: created topic {spec.name} ({spec.partitions} partitions)")
        return self.status()

    def down(self) -> list[str]:
        stopped = []
        procs = self.state.load()
        # Redis first: it holds no dependency on the broker, and the broker takes longer.
        for name in sorted(procs, key=lambda n: n != "redis"):
            proc = procs[name]
            if terminate(proc):
                stopped.append(name)
                self.say(f"{name}: stopped (pid {proc.pid})")
            else:
                self.say(f"{name}: was not running")
        self.state.save({})
        self._wait_ports_closed([n for n in stopped])
        return stopped

    def _endpoints(self) -> dict[str, tuple[str, int]]:
        return {"kafka": self.settings.kafka_host_port, "redis": self.settings.redis_host_port}

    @staticmethod
    def _tools_for(services: list[str]) -> list[str]:
        tools = []
        if "kafka" in services:
            tools += ["java", "mvn"]
        if "redis" in services:
            tools.append("redis-server")
        return tools

    def _start_kafka(self, java: str) -> ManagedProcess:
        classpath = kafka.resolve_classpath(self.settings, self.say)
        config = kafka.write_config(self.settings)
        kafka.format_storage(java, classpath, config, self.settings)
        self.say(f"kafka: starting Apache Kafka {self.settings.kafka_version} (KRaft) with {java}")
        cmd = kafka.broker_command(java, classpath, config, self.settings)
        pid = spawn(cmd, self.settings.root / "kafka" / "stdout.log", self.settings.root)
        host, port = self.settings.kafka_host_port
        return ManagedProcess("kafka", pid, f"{host}:{port}", marker=str(config))

    def _start_redis(self, redis_server: str) -> ManagedProcess:
        self.say(f"redis: starting {redis_server}")
        cmd = redis_command(redis_server, self.settings)
        pid = spawn(cmd, self.settings.root / "redis" / "stdout.log", self.settings.root)
        host, port = self.settings.redis_host_port
        # Not ":<port>" of the title redis-server used to give itself: a check in its first
        # milliseconds, before the rename, took a starting Redis for one that had exited.
        return ManagedProcess("redis", pid, f"{host}:{port}", marker=redis_marker(self.settings))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        waiting = {"kafka": self._kafka_ready, "redis": self._redis_ready}
        while waiting:
            for name in list(waiting):
                if waiting[name]():
                    del waiting[name]
            if not waiting:
                break
            if time.monotonic() > deadline:
                logs = self.settings.root
                raise StackError(f"{', '.join(waiting)} did not answer in time; see the logs under {logs}")
            self._check_alive(list(waiting))
            time.sleep(0.5)

    def _check_alive(self, names: list[str]) -> None:
        for name in names:
            proc = self.state.load().get(name)
            if proc is not None and not is_ours(proc):
                raise StackError(f"{name} exited during start-up; see the logs under {self.settings.root / name}")

    def _kafka_ready(self) -> bool:
        return kafka_ready(self.settings)

    def _redis_ready(self) -> bool:
        client = redis.Redis.from_url(self.settings.redis_url.get_secret_value(), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _wait_ports_closed(self, names: list[str], timeout_s: float = 30.0) -> None:
        endpoints = self._endpoints()
        deadline = time.monotonic() + timeout_s
        while any(port_open(*endpoints[n]) for n in names) and time.monotonic() < deadline:
            time.sleep(0.2)
