"""`fti serve` (the gRPC server) and `fti predict` (a command-line client)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fti_core.errors import FtiError
from fti_core.settings import load_settings

from .settings import EventLoop, InferenceSettings, PredictSettings

if TYPE_CHECKING:
    from .server import InferenceServer

__all__ = ["predict", "run_event_loop", "serve"]

log = logging.getLogger(__name__)


def _settings(**options: Any) -> InferenceSettings:
    # Only options the user gave override the environment / config file.
    return load_settings(InferenceSettings, **{k: v for k, v in options.items() if v is not None})


@click.command()
@click.option("--model", required=True, help="Model name in the registry.")
@click.option("--alias", default=None, help="Alias to serve (default: production, or FTI_SERVE_ALIAS).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50051; 0 picks a free one).")
@click.option(
    "--metrics-port", type=int, default=None, help="Prometheus /metrics port (default 9095; 0 picks a free one)."
)
@click.option("--redis-prefix", default=None, help="Online-store key prefix in Redis (default FTI_REDIS_PREFIX).")
@click.option(
    "--swap-on-publish/--no-swap-on-publish",
    default=None,
    help="Serve each newly published version instead of the alias.",
)
@click.option("--tls-cert", "tls_cert_file", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--tls-key", "tls_key_file", type=click.Path(exists=True, path_type=Path), default=None)
def serve(**options: Any) -> None:
    """Serve a model's alias over gRPC, hot-swapping on model events."""
    settings = _settings(**options)
    run_event_loop(_serve(settings), settings.event_loop)


def run_event_loop(main: Coroutine[Any, Any, None], choice: EventLoop) -> None:
    """Run `main` on uvloop when installed and allowed, else on asyncio's own loop."""
    # uvloop's loop does less Python work per callback and per socket event; the server
    # behaves the same on either loop, so uvloop is optional and its absence is no error.
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main.close()  # never started: close it rather than leave it unawaited
                raise click.ClickException("event_loop is uvloop but uvloop is not installed") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def _serve(settings: InferenceSettings) -> None:
    from .server import create_server

    try:
        server, port = create_server(settings)
        await server.start()
    except FtiError as exc:  # a busy port, Kafka unreachable: one line and exit 1, no traceback
        raise click.ClickException(f"fti serve: {exc}") from exc
    _freeze_startup_heap()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    click.echo(f"fti serve: model {settings.model!r} alias {settings.alias!r} on port {port}", err=True)
    if server.metrics_port is not None:
        click.echo(f"fti serve: metrics on http://localhost:{server.metrics_port}/metrics", err=True)
    announce = asyncio.create_task(_announce_readiness(server)) if not server.ready.is_set() else None
    await stopping.wait()
    if announce is not None:
        announce.cancel()
    click.echo(f"fti serve: draining (up to {settings.shutdown_grace_s:.0f}s)", err=True)
    await server.stop()


async def _announce_readiness(server: InferenceServer) -> None:
    """Started without a model: say once what the server waits for, and again when it has it."""
    holder = server.holder
    if holder.follow_latest:
        awaited = f"model {holder.model!r} to have a published version"
    else:
        awaited = f"model {holder.model!r} alias {holder.alias!r} to have a version"
    click.echo(f"fti serve: waiting for {awaited}; NOT_SERVING until then", err=True)
    await server.ready.wait()
    loaded = holder.current
    version = f" v{loaded.version}" if loaded is not None else ""
    click.echo(f"fti serve: model {holder.model!r}{version} loaded; SERVING", err=True)


def _freeze_startup_heap() -> None:
    """Keep the garbage collector away from the objects the server is made of."""
    # After start-up the heap holds ~170k long-lived objects (gRPC, protobuf, LightGBM,
    # pydantic modules); a full collection walks them all and stalls the event loop ~50 ms,
    # which under load happens every few seconds and lands on p99. Frozen objects are never
    # walked; only what requests and swaps allocate later is. Collect first so no garbage is
    # frozen with them. Only `fti serve` does this: it owns its process, a test does not.
    gc.collect()
    gc.freeze()


def _parse_value(text: str) -> Any:
    from fti.v1 import values_pb2

    lowered = text.lower()
    if lowered in ("true", "false"):
        return values_pb2.Value(bool_value=lowered == "true")
    with contextlib.suppress(ValueError):
        return values_pb2.Value(int64_value=int(text))
    with contextlib.suppress(ValueError):
        return values_pb2.Value(double_value=float(text))
    return values_pb2.Value(string_value=text)


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint=what)
        out[key] = value
    return out


@click.command()
@click.option("--model", default="", help="Model name (empty: the server's model).")
@click.option(
    "--target", default=None, help="host:port of the server (default localhost:50051, or FTI_PREDICT_TARGET)."
)
@click.option(
    "-V",
    "--value",
    "values",
    multiple=True,
    help="Request-time feature value, name=number (name=text for a string feature; repeatable).",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Deadline in seconds.")
@click.option("--tls-ca", type=click.Path(exists=True, path_type=Path), default=None, help="CA to verify a TLS server.")
@click.argument("entities", nargs=-1)
def predict(
    model: str,
    target: str | None,
    values: tuple[str, ...],
    timeout: float,
    tls_ca: Path | None,
    entities: tuple[str, ...],
) -> None:
    """Score one request: ENTITIES are entity_kind=key pairs, e.g. card_id=c42 merchant_id=m7."""
    import grpc
    from google.protobuf import json_format

    from fti.v1 import inference_pb2, inference_pb2_grpc

    address = target or load_settings(PredictSettings).target
    request = inference_pb2.PredictRequest(
        model=model,
        entities=_pairs(entities, "ENTITIES"),
        request_values={k: _parse_value(v) for k, v in _pairs(values, "--value").items()},
    )
    if tls_ca is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca.read_bytes()))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            response = inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc
    click.echo(
        json_format.MessageToJson(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=2
        )
    )
