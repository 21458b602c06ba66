"""Pure functions over an alias's move history (oldest first, sequence 1, 2, ...)."""

from __future__ import annotations

from collections.abc import Sequence

from registry.models.records import AliasMoveRecord

__all__ = ["current_holder", "holder_at", "holder_stack", "rollback_target"]


def current_holder(history: Sequence[AliasMoveRecord]) -> int | None:
    return history[-1].to_version if history else None


def holder_at(history: Sequence[AliasMoveRecord], at_ms: int) -> int | None:
    """The version the alias pointed at at `at_ms` (inclusive), None before its first move."""
    holder = None
    for move in history:
        if move.at_ms > at_ms:
            break
        holder = move.to_version
    return holder


def holder_stack(history: Sequence[AliasMoveRecord]) -> list[int]:
    """Holders in force, oldest first: a rollback pops the holder it rolled back from.

    Rolling back twice therefore walks further into the past (v3 -> v2 -> v1) instead of
    flip-flopping between the last two holders.
    """
    stack: list[int] = []
    for move in history:
        if move.kind == "rolled_back":
            if stack:
                stack.pop()
            if not stack or stack[-1] != move.to_version:
                stack.append(move.to_version)
        elif not stack or stack[-1] != move.to_version:
            stack.append(move.to_version)
    return stack


def rollback_target(history: Sequence[AliasMoveRecord]) -> int | None:
    """The holder before the current one, or None when there is nothing to roll back to."""
    stack = holder_stack(history)
    return stack[-2] if len(stack) >= 2 else None
