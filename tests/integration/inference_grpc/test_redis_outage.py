"""Redis stopped and restarted under load: UNAVAILABLE with a clear message, then recovery by itself."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from featurestore.online import RedisOnlineStore
from fti.v1 import inference_pb2
from registry.models import ModelRegistry

from ...net import free_port
from ...unit.inference_grpc.models_helper import publish_model
from ...waits import wait_for
from .conftest import MODEL, ServerFactory, write_features
from .load import Load


class OwnRedis:
    """A private redis-server this test may stop and restart without disturbing anyone."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        wait_for(self._answers, what=f"redis-server on port {self.port} to answer PING")

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.url)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

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

    await load.wait_for_answers(20, code="OK")
    answered_before_outage = len(load.samples)
    await asyncio.to_thread(own_redis.stop)
    down = load.mark()
    await load.wait_for_answers(10, code="UNAVAILABLE", after=down)  # the outage is seen
    await asyncio.to_thread(own_redis.start)
    up = load.mark()
    write_features(store, "c1", "m1")  # the restarted Redis is empty; the feature pipeline would refill it
    await load.wait_for_answers(1, code="OK", after=up)  # recovered by itself
    recovered = load.mark()
    await load.wait_for_answers(20, after=recovered)
    await load.stop()

    codes = {s.code for s in load.samples}
    # Never INTERNAL, and never a hang: a request stuck on a dead socket would end in the
    # client's own 5 s deadline (DEADLINE_EXCEEDED).
    assert codes == {"OK", "UNAVAILABLE"}, codes
    outage = load.answers(code="UNAVAILABLE")
    assert all("online store (Redis)" in s.details for s in outage), outage[0].details
    # UNAVAILABLE only around the outage: everything answered before it began, and everything
    # sent once recovery was seen, is OK.
    assert {s.code for s in load.samples[:answered_before_outage]} == {"OK"}
    assert {s.code for s in load.answers(after=recovered)} == {"OK"}
    print(f"\n{len(outage)} UNAVAILABLE during the outage, {len(load.samples)} requests in all")
