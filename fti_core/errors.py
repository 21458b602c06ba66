"""Typed errors shared by every FTI package, rooted in one base class.

Each error knows the gRPC status it maps to, so servers translate them in one interceptor.
"""

from __future__ import annotations

import grpc

__all__ = [
    "ConflictError",
    "FtiError",
    "IntegrityError",
    "InvalidArgumentError",
    "NotFoundError",
    "UnavailableError",
]


class FtiError(Exception):
    """Base class of every error this project raises on purpose."""

    grpc_status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class NotFoundError(FtiError):
    grpc_status = grpc.StatusCode.NOT_FOUND


class InvalidArgumentError(FtiError):
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class UnavailableError(FtiError):
    """A backing service (Kafka, Redis, object store) could not be reached."""

    grpc_status = grpc.StatusCode.UNAVAILABLE


class IntegrityError(FtiError):
    """Stored bytes do not match their recorded hash."""

    grpc_status = grpc.StatusCode.DATA_LOSS


class ConflictError(FtiError):
    """A write raced another writer or contradicts what is recorded."""

    grpc_status = grpc.StatusCode.ABORTED
