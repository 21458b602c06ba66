"""Redis stopped and restarted under load: UNAVAILABLE with a clear message, then recovery by itself."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from featurestore.online import RedisOnlineStore
from fti.v1 import inference_pb2
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import publish_model
from .conftest import MODEL, ServerFactory, wait_until, write_features
from .load import Load


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A private redis-server this test may stop and restart without disturbing anyone."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_redis_stopped_and_restarted_mid_load(
    serve: ServerFactory, publisher: ModelRegistry, own_redis: OwnRedis, redis_prefix: str
) -> None:
    record = await asyncio.to_thread(publish_model, publisher, MODEL, 1)
    await asyncio.to_thread(publisher.move_alias, MODEL, "production", record.version, actor="test")
    store = RedisOnlineStore.from_url(own_redis.url, redis_prefix)
    write_features(store, "c1", "m1")
    run = await serve(redis_url=own_redis.url)
    load = Load(run.stub, inference_pb2.PredictRequest(entities={"card_id": "c1", "merchant_id": "m1"}), rate=100)
    load.start()

    await asyncio.sleep(0.5)
    await asyncio.to_thread(own_redis.stop)
    stopped_at = time.monotonic()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_redis.start)
    restarted_at = time.monotonic()
    write_features(store, "c1", "m1")  # the restarted Redis is empty; the feature pipeline would refill it
    recovered = await wait_until(lambda: _last_ok(load), what="OK answers after Redis returned")
    await asyncio.sleep(0.5)
    await load.stop()

    codes = {s.code for s in load.samples}
    assert codes == {"OK", "UNAVAILABLE"}, codes  # never INTERNAL, never a hang
    outage = [s for s in load.samples if s.code == "UNAVAILABLE"]
    assert all("online store (Redis)" in s.details for s in outage), outage[0].details
    assert all(stopped_at - 0.1 <= s.sent <= restarted_at + 1.0 for s in outage)
    assert max(s.received - s.sent for s in outage) < 1.0  # failing fast, not hanging on a dead socket
    after = [s for s in load.samples if s.sent > restarted_at + recovered + 0.05]
    assert after and all(s.code == "OK" for s in after)
    print(f"\n{len(outage)} UNAVAILABLE during the outage; recovered {recovered * 1000:.0f} ms after restart")


async def _last_ok(load: Load) -> bool:
    return bool(load.samples) and load.samples[-1].code == "OK"
