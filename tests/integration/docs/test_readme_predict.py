"""The README's Python gRPC example works as written against a real `fti serve` process."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from featurestore.online import OnlineRow, RedisOnlineStore
from registry.models import ModelRegistry

from ...net import free_port, grpc_serving
from ...unit.inference_grpc.models_helper import publish_model
from ...waits import wait_for
from .test_readme_examples import example


def test_predict_example_prints_a_score_from_the_served_version(
    tmp_data_dir: Path, kafka_bootstrap: str, redis_url: str, redis_prefix: str, topic_factory: object
) -> None:
    registry = ModelRegistry.from_uri(str(tmp_data_dir / "registry"))
    record = publish_model(registry, "fraud", seed=3)
    registry.move_alias("fraud", "production", record.version, actor="test")
    now = int(time.time() * 1000)
    RedisOnlineStore.from_url(redis_url, prefix=redis_prefix).write(
        [
            OnlineRow("card_activity", 1, "c00001", now - 500, {"txn_count": 3, "amount_sum": 80.0}, 3_600_000),
            OnlineRow("merchant_activity", 1, "m0001", now - 500, {"txn_count": 12}, 3_600_000),
        ]
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTI_")}
    env.update(
        FTI_DATA_DIR=str(tmp_data_dir),
        FTI_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        FTI_REDIS_URL=redis_url,
        FTI_MODELS_TOPIC=topic_factory("models"),  # type: ignore[operator]
        FTI_SERVE_METRICS_PORT="0",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fti_cli",
            "serve",
            "--model",
            "fraud",
            "--port",
            str(port),
            "--redis-prefix",
            redis_prefix,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def serving() -> bool:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server exited"
            return grpc_serving(f"localhost:{port}")

        wait_for(serving, what="fti serve to become SERVING", poll_s=0.2)
        out = io.StringIO()
        code = example("predict").replace('"localhost:50051"', repr(f"localhost:{port}"))
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md#predict", "exec"), {})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"fraud v{record.version}: score 0.")
    assert "card_activity amount_sum FEATURE_STATUS_OK" in out.getvalue()
    assert len(lines) == 1 + 3, "one line per model feature"
    assert server.returncode == 0, "SIGTERM drains and exits cleanly"
