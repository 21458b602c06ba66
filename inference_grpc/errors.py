"""Errors of the inference pipeline. Each carries the gRPC status the interceptor answers with."""

from __future__ import annotations

import grpc

from fti_core.errors import FtiError, InvalidArgumentError, NotFoundError, UnavailableError

__all__ = [
    "BatchTooLargeError",
    "DeadlineExceededError",
    "InvalidRequestError",
    "ModelNotLoadedError",
    "OnlineStoreUnavailableError",
    "ServerStartError",
    "UndecodableRequestError",
    "UnknownModelError",
]


class InvalidRequestError(InvalidArgumentError):
    """The request itself is wrong: a missing entity key, a wrong type, a NaN."""


class UndecodableRequestError(InvalidRequestError):
    """The request bytes are not the method's Protobuf message (a client bug, or not gRPC+proto)."""


class UnknownModelError(NotFoundError):
    """The request names a model this server does not serve."""


class BatchTooLargeError(FtiError):
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(FtiError):
    """The caller's deadline passed before the work could be done; nothing more was attempted."""

    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED


class ModelNotLoadedError(UnavailableError):
    """No model version is loaded yet (the health service says NOT_SERVING meanwhile)."""


class OnlineStoreUnavailableError(UnavailableError):
    """Redis could not be read; the next request tries again, so the server recovers by itself."""


class ServerStartError(FtiError):
    """The server cannot start (a port in use, say); `fti serve` prints it on one line and exits 1.

    Never answers a call, so its gRPC status is never used.
    """
