"""How the stack reports progress."""

from collections.abc import Callable

__all__ = ["Say"]

Say = Callable[[str], None]
