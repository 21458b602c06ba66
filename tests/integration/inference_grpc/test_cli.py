"""The new user's path: `fti serve` in its own process, `fti predict`, a promotion, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurestore.online import RedisOnlineStore
from inference_grpc.cli import predict
from inference_grpc.settings import InferenceSettings
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import publish_model
from .conftest import MODEL, write_features


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(port: int, proc: subprocess.Popen[bytes], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, "fti serve exited"
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError("fti serve never became SERVING")


def _predict(port: int) -> dict[str, object]:
    result = CliRunner().invoke(
        predict,
        ["--target", f"127.0.0.1:{port}", "--model", MODEL, "card_id=c1", "merchant_id=m1", "-V", "amount_sum=5"],
    )
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.output)
    return parsed


def test_fti_serve_predict_promote_and_drain_on_sigterm(
    inference_settings: InferenceSettings, publisher: ModelRegistry, feature_store: RedisOnlineStore, tmp_path: Path
) -> None:
    v1, v2 = publish_model(publisher, MODEL, 1), publish_model(publisher, MODEL, 2)
    publisher.move_alias(MODEL, "production", v1.version, actor="test")
    write_features(feature_store, "c1", "m1")
    port = _free_port()
    env = {
        **os.environ,
        "FTI_DATA_DIR": str(inference_settings.data_dir),
        "FTI_MODELS_TOPIC": inference_settings.models_topic,
        "FTI_KAFKA_BOOTSTRAP_SERVERS": inference_settings.kafka_bootstrap_servers,
        "FTI_REDIS_URL": inference_settings.redis_url.get_secret_value(),
        "FTI_SERVE_HOST": "127.0.0.1",
    }
    fti = shutil.which("fti") or str(Path(sys.executable).parent / "fti")
    args = [fti, "serve", "--model", MODEL, "--port", str(port), "--metrics-port", "0"]
    proc = subprocess.Popen([*args, "--redis-prefix", inference_settings.redis_prefix], env=env, stderr=subprocess.PIPE)
    try:
        _wait_serving(port, proc)
        first = _predict(port)
        assert (first["model"], first["model_version"]) == (MODEL, v1.version)
        publisher.move_alias(MODEL, "production", v2.version, actor="test")
        deadline = time.monotonic() + 20
        while _predict(port)["model_version"] != v2.version:
            assert time.monotonic() < deadline, "the promotion never reached fti serve"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    assert b"draining" in stderr


def test_fti_predict_reports_the_status_of_a_failed_call() -> None:
    result = CliRunner().invoke(predict, ["--target", f"127.0.0.1:{_free_port()}", "--timeout", "0.5", "card_id=c1"])
    assert result.exit_code != 0 and "UNAVAILABLE" in result.output
