"""The new user's path: `fti serve` in its own process, `fti predict`, a promotion, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from featurestore.online import RedisOnlineStore
from inference_grpc.cli import predict
from inference_grpc.settings import InferenceSettings
from registry.models import ModelRegistry

from ...net import free_port, grpc_serving
from ...unit.inference_grpc.models_helper import publish_model
from ...waits import wait_for
from .conftest import MODEL, write_features


def _wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    def check() -> bool:
        assert proc.poll() is None, "fti serve exited"
        return grpc_serving(f"127.0.0.1:{port}")

    wait_for(check, what="fti serve to become SERVING")


class _Stderr:
    """Collects a process's stderr lines as they come (a thread: the pipe read blocks)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def count(self, phrase: str) -> int:
        return sum(phrase in line for line in list(self.lines))

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=30)


def _fti() -> str:
    # This interpreter's own `fti` first: another one on PATH would run other code.
    own = Path(sys.executable).parent / "fti"
    return str(own) if own.exists() else shutil.which("fti") or "fti"


def _env(settings: InferenceSettings) -> dict[str, str]:
    return {
        **os.environ,
        "FTI_DATA_DIR": str(settings.data_dir),
        "FTI_MODELS_TOPIC": settings.models_topic,
        "FTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "FTI_REDIS_URL": settings.redis_url.get_secret_value(),
        "FTI_SERVE_HOST": "127.0.0.1",
    }


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
    port = free_port()
    args = [_fti(), "serve", "--model", MODEL, "--port", str(port), "--metrics-port", "0"]
    proc = subprocess.Popen(
        [*args, "--redis-prefix", inference_settings.redis_prefix], env=_env(inference_settings), stderr=subprocess.PIPE
    )
    try:
        _wait_serving(port, proc)
        first = _predict(port)
        assert (first["model"], first["model_version"]) == (MODEL, v1.version)
        publisher.move_alias(MODEL, "production", v2.version, actor="test")
        wait_for(lambda: _predict(port)["model_version"] == v2.version, what="the promotion to reach fti serve")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    assert b"draining" in stderr


def test_fti_predict_reports_the_status_of_a_failed_call() -> None:
    result = CliRunner().invoke(predict, ["--target", f"127.0.0.1:{free_port()}", "--timeout", "0.5", "card_id=c1"])
    assert result.exit_code != 0 and "UNAVAILABLE" in result.output


def test_fti_serve_without_a_version_says_once_what_it_waits_for_then_that_it_serves(
    inference_settings: InferenceSettings, publisher: ModelRegistry
) -> None:
    port = free_port()
    args = [_fti(), "serve", "--model", MODEL, "--port", str(port), "--metrics-port", "0"]
    proc = subprocess.Popen(args, env=_env(inference_settings), stderr=subprocess.PIPE)
    stderr = _Stderr(proc)
    waiting = "waiting for model 'fraud' alias 'production' to have a version; NOT_SERVING until then"
    try:
        wait_for(lambda: stderr.count(waiting), what="the waiting line", details=stderr.text)
        assert not grpc_serving(f"127.0.0.1:{port}")
        record = publish_model(publisher, MODEL, 1)
        publisher.move_alias(MODEL, "production", record.version, actor="test")
        loaded = f"model 'fraud' v{record.version} loaded; SERVING"
        wait_for(lambda: stderr.count(loaded), what="the loaded line", details=stderr.text)
        _wait_serving(port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stderr.join()
    assert proc.returncode == 0, stderr.text()
    assert stderr.count("waiting for model") == 1 and stderr.count("loaded; SERVING") == 1, stderr.text()


def test_a_busy_port_is_one_clear_line_and_exit_status_1(inference_settings: InferenceSettings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        for flag, other in (("--metrics-port", "--port"), ("--port", "--metrics-port")):
            args = [_fti(), "serve", "--model", MODEL, flag, taken, other, "0"]
            done = subprocess.run(args, env=_env(inference_settings), capture_output=True, timeout=120)
            stderr = done.stderr.decode()
            assert done.returncode == 1, stderr
            assert "Traceback" not in stderr, stderr
            # Ours is the last line (gRPC's C core may log its own bind error just before it).
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("Error: fti serve: cannot ") and taken in last and flag in last, stderr
