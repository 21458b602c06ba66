"""One server interceptor maps domain errors to gRPC statuses and records RPC metrics.

Servicers raise typed errors (each knows its `grpc_status`) and never call `context.abort`.
Anything unexpected is logged with its traceback and answered INTERNAL without internals;
bad input never gets there, because validation raises InvalidRequestError first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from registry.errors import FtiError

from .metrics import Metrics

__all__ = ["ErrorMappingInterceptor"]

log = logging.getLogger(__name__)

_Unary = Callable[[Any, Any], Awaitable[Any]]


class ErrorMappingInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics, service_prefix: str) -> None:
        self._metrics = metrics
        self._prefix = service_prefix
        # Wrapped handlers, built once per method: this runs on every call, keep it cheap.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        # Health and reflection pass through untouched; only our unary methods are wrapped.
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefix):
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method.rsplit("/", 1)[-1]),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, inner: _Unary, name: str) -> _Unary:
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
