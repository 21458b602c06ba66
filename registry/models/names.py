"""Name checks and path safety: every key the registry touches is built from checked names.

Model and alias names come from users (CLI arguments, definitions files, event payloads), so
they are matched against an allow-list before they become part of a path, and every joined
path is checked again to stay under the registry root. The allow-list alone refuses `..`,
separators, backslashes, `%` escapes and NUL bytes; the second check is defence in depth
for keys read back from stored records (for example an `artefact_uri`).
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

from fti_core.errors import InvalidArgumentError

__all__ = ["NAME_PATTERN", "InvalidNameError", "check_alias", "check_model_name", "safe_key"]

# Letters, digits, '_' and '-'; starts with a letter or digit; no dots at all, so no `..`.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class InvalidNameError(InvalidArgumentError):
    """A model or alias name, or a stored key, that could escape the registry root."""


def _check(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidNameError(f"{kind} name {name!r} is not allowed: it must match {NAME_PATTERN.pattern}")
    return name


def check_model_name(name: str) -> str:
    return _check("model", name)


def check_alias(name: str) -> str:
    return _check("alias", name)


def _fully_unquoted(text: str) -> str:
    # Decode until stable so double-encoded dots (%252e%252e) are seen as `..` too.
    for _ in range(5):
        decoded = unquote(text)
        if decoded == text:
            return decoded
        text = decoded
    raise InvalidNameError("key is encoded too many times")


def safe_key(*parts: str) -> str:
    """Join relative key parts with '/', refusing anything that could leave the root.

    Refused: empty parts, absolute paths, `..` segments (also percent- or double-encoded),
    backslashes, NUL bytes, and `:` (drive letters, URL schemes).
    """
    if not parts:
        raise InvalidNameError("empty key")
    for part in parts:
        decoded = _fully_unquoted(part)
        for text in (part, decoded):
            if not text or "\x00" in text or "\\" in text or ":" in text or text.startswith("/"):
                raise InvalidNameError(f"key part {part!r} is not a plain relative path")
            if any(seg in ("", ".", "..") for seg in text.split("/")):
                raise InvalidNameError(f"key part {part!r} has an empty, '.' or '..' segment")
    key = "/".join(parts)
    if posixpath.normpath(key) != key:
        raise InvalidNameError(f"key {key!r} is not normalised")
    return key
