"""One interceptor maps domain errors to gRPC statuses and records RPC metrics.

Servicers raise typed errors (each knows its `grpc_status`) and never call `context.abort`.
Anything unexpected is logged with its traceback and answered INTERNAL without internals;
bad input never gets there, because validation raises InvalidRequestError first.

It wraps the service's methods once, when the service is registered, rather than sitting in
`aio.server(interceptors=...)`: grpc.aio runs an interceptor chain on every call (a
coroutine per interceptor, a continuation, a handler lookup), which cost ~40 µs of a
Predict's ~450 µs of server CPU. Health and reflection are not wrapped, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from fti_core.errors import FtiError

from .metrics import Metrics

__all__ = ["ErrorMappingInterceptor"]

log = logging.getLogger(__name__)

_Unary = Callable[[Any, Any], Awaitable[Any]]
_Servicer = TypeVar("_Servicer")


class _Intercepted:
    """Stands in for a servicer at registration: the generated code only reads its methods."""

    def __init__(self, methods: dict[str, _Unary]) -> None:
        self.__dict__.update(methods)


class ErrorMappingInterceptor:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept(self, servicer: _Servicer, service: ServiceDescriptor) -> _Servicer:
        """`servicer` with every method of `service` wrapped; register this in its place."""
        methods = {m.name: self.wrap(getattr(servicer, m.name), m.name) for m in service.methods}
        return cast(_Servicer, _Intercepted(methods))

    def wrap(self, inner: _Unary, name: str) -> _Unary:
        metrics = self._metrics
        latency = metrics.latency.labels(method=name)
        ok = metrics.requests.labels(method=name, code=grpc.StatusCode.OK.name)

        async def call(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except FtiError as exc:
                code = exc.grpc_status
                await context.abort(code, str(exc))
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed unexpectedly", name)
                await context.abort(code, "internal error; see the server log")
            finally:
                latency.observe(time.perf_counter() - started)
                (ok if code is grpc.StatusCode.OK else metrics.requests.labels(method=name, code=code.name)).inc()

        return call
