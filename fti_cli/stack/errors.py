"""Errors of the local stack."""

from fti_core.errors import FtiError

__all__ = ["StackError"]


class StackError(FtiError):
    """The stack could not be started or stopped; the message says what to do."""
