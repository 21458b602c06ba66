"""A minimal hand-written grpc.aio inference server: the baseline `fti serve` is measured against.

What a careful engineer would write for one model with no framework around it: the same
`fti.v1.InferenceService` (Predict only), the same LightGBM model parsed from the same artefact
file, and per request one pipelined Redis round trip of the same tiles hashes `fti serve` reads,
windows evaluated at the request time by a few lines of code per aggregation kind, one
`Booster.predict`, and a response copied from a prebuilt template (score, and each feature's
status and value). It skips what the product adds: validation beyond the entity keys, deadlines,
request values, the tail of a tile that holds later events (the bench's data never needs it),
hot swap, metrics, health and reflection beyond readiness. Same server options and event loop as
`fti serve` (uvloop when installed).

Usage: python bench/inference/handwritten_server.py PORT REDIS_URL PREFIX MODEL_FILE DEFINITIONS
       MODEL_NAME MODEL_VERSION VIEW:VERSION...   (views in the model's feature order)
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import redis.asyncio as aredis
from grpc import aio

from featurestore.definitions import FeatureViewDef, load_definitions
from fti.v1 import inference_pb2, inference_pb2_grpc
from inference_grpc.cli import run_event_loop
from inference_grpc.settings import InferenceSettings

NAN = float("nan")


def _merge(agg: str, partials: list[Any]) -> float:
    """One feature's value from the partials of the tiles in its window (NaN: no value)."""
    if agg == "count":
        return float(sum(partials))
    if agg in ("sum", "mean"):  # exact: [numerator as text, shift, count]
        shift = max((p[1] for p in partials), default=0)
        num = sum(int(p[0]) << (shift - p[1]) for p in partials)
        size = sum(p[2] for p in partials)
        if agg == "mean":
            return num / ((1 << shift) * size) if size else NAN
        return num / (1 << shift) if num else 0.0
    if agg in ("min", "max"):
        found = [p for p in partials if p is not None]
        return (min(found) if agg == "min" else max(found)) if found else NAN
    if agg == "last":
        found = [p for p in partials if p is not None]
        return float(max(found, key=lambda p: (p[0], p[1]))[2]) if found else NAN
    if agg == "distinct_count":
        return float(len({x for p in partials for x in p}))
    raise ValueError(f"aggregation {agg} is not handled here")


@dataclass(frozen=True)
class _View:
    spec: FeatureViewDef
    entity: str

    def values(self, raw: dict[bytes, bytes], t: int) -> list[float]:
        tiles = {}
        for f, v in raw.items():
            tile_step, _, tile_start = f.partition(b":")
            if tile_start:  # not `n` or `w`
                tiles[(int(tile_step), int(tile_start))] = json.loads(v)
        out = []
        for feat in self.spec.features:
            size, step = feat.window.size_ms, feat.window.step_ms
            now = t // step * step
            parts = []
            for start in range(now - size + step, now + step, step):
                tile = tiles.get((step, start))
                if tile is not None and tile[0] <= t:
                    parts.append(tile[1][feat.name])
            out.append(_merge(feat.agg.value, parts))
        return out


class HandWritten(inference_pb2_grpc.InferenceServiceServicer):
    client: aredis.Redis  # set inside the event loop

    def __init__(self, prefix: str, booster: lgb.Booster, views: list[_View], template: Any) -> None:
        self._booster, self._views, self._template = booster, views, template
        self._prefix = prefix

    async def Predict(self, request: inference_pb2.PredictRequest, context: Any) -> inference_pb2.PredictResponse:
        t = int(time.time() * 1000)  # the request's read time, as fti serve takes it
        pipe = self.client.pipeline(transaction=False)
        for v in self._views:
            pipe.hgetall(f"{self._prefix}:tiles:{v.spec.name}:v{v.spec.version}:{request.entities[v.entity]}")
        raws = await pipe.execute()
        row = [x for v, raw in zip(self._views, raws, strict=True) for x in v.values(raw, t)]
        score = float(self._booster.predict(np.array([row]), num_threads=1)[0])
        response = inference_pb2.PredictResponse()
        response.CopyFrom(self._template)
        response.score = score
        for out, x in zip(response.features, row, strict=True):
            ok = not math.isnan(x)
            out.status = inference_pb2.FEATURE_STATUS_OK if ok else inference_pb2.FEATURE_STATUS_MISSING
            out.value = x
        return response

    async def PredictBatch(self, request: Any, context: Any) -> Any:
        raise NotImplementedError("the hand-written baseline answers Predict only")


def _load(argv: list[str]) -> tuple[int, str, HandWritten]:
    """Everything blocking happens here, before the event loop starts."""
    port, url, prefix, model_file, definitions, model, version, *refs = argv
    defs = load_definitions(Path(definitions))
    views = [_View(defs.view(n, int(v)), defs.view(n, int(v)).entity) for n, v in (r.split(":") for r in refs)]
    booster = lgb.Booster(model_str=Path(model_file).read_text())
    template = inference_pb2.PredictResponse(
        model=model,
        model_version=int(version),
        views=[inference_pb2.ViewVersion(view=v.spec.name, version=v.spec.version) for v in views],
        features=[
            inference_pb2.FeatureUsed(name=f.name, view=v.spec.name, view_version=v.spec.version)
            for v in views
            for f in v.spec.features
        ],
    )
    return int(port), url, HandWritten(prefix, booster, views, template)


async def main(port: int, url: str, servicer: HandWritten) -> None:
    servicer.client = aredis.Redis.from_url(url)
    size = InferenceSettings.model_fields["max_message_bytes"].default
    server = aio.server(options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)])
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1)
    await servicer.client.aclose()


if __name__ == "__main__":
    run_event_loop(main(*_load(sys.argv[1:])), InferenceSettings().event_loop)
