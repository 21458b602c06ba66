"""Blob storage under the registry root: a local directory, or any fsspec URI.

Two write primitives carry the registry's guarantees:

* `put` writes a whole object so that readers see either nothing or all of it (a local file
  is written aside and renamed; an object-store PUT is already all-or-nothing).
* `put_exclusive` creates an object only if no object has that key. Locally this is
  `os.link` of a fully written temporary file, which is atomic and fails when the target
  exists, so two publishers can never both commit version N and a reader can never see a
  half-written version. On fsspec stores it is `open(mode="xb")`: atomic on filesystems
  and object stores with conditional PUT, a documented best effort elsewhere.

A publisher killed mid-write leaves at most a dot-prefixed temporary file or an
unreferenced, content-addressed artefact; `list` never returns dot-prefixed names.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import fsspec

from fti_core.errors import NotFoundError, UnavailableError
from registry.models.names import InvalidNameError, safe_key

__all__ = ["BlobStore", "FsspecBlobStore", "LocalBlobStore", "open_store"]


class BlobStore(ABC):
    """Keys are relative '/'-separated paths built with `safe_key`."""

    @property
    @abstractmethod
    def root(self) -> str: ...

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The object's bytes; NotFoundError when absent."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Create or replace the object, all or nothing."""

    @abstractmethod
    def put_exclusive(self, key: str, data: bytes) -> bool:
        """Create the object; False (and no change) when the key already exists."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names (not keys) directly under `prefix`, sorted, without dot-prefixed names."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).resolve()

    @property
    def root(self) -> str:
        return str(self._root)

    def _path(self, key: str) -> Path:
        path = (self._root / safe_key(key)).resolve()
        # Symlinks inside the root could still point out of it.
        if not path.is_relative_to(self._root):
            raise InvalidNameError(f"key {key!r} resolves outside the registry root")
        return path

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{key} not found in {self._root}") from exc

    def _write_aside(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_aside(path, data)
        os.replace(tmp, path)

    def put_exclusive(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if path.exists():
            return False
        tmp = self._write_aside(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))

    def exists(self, key: str) -> bool:
        return self._path(key).exists()


class FsspecBlobStore(BlobStore):
    """Any fsspec filesystem (s3://, gs://, memory://, ...)."""

    def __init__(self, uri: str, **storage_options: Any) -> None:
        fs, path = fsspec.core.url_to_fs(uri, **storage_options)
        self._fs = fs
        self._uri = uri
        self._base = str(path).rstrip("/")

    @property
    def root(self) -> str:
        return self._uri

    def _path(self, key: str) -> str:
        return f"{self._base}/{safe_key(key)}"

    def read(self, key: str) -> bytes:
        try:
            data: bytes = self._fs.cat_file(self._path(key))
        except FileNotFoundError as exc:
            raise NotFoundError(f"{key} not found in {self._uri}") from exc
        except OSError as exc:
            raise UnavailableError(f"cannot read {key} from {self._uri}: {exc}") from exc
        return data

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with contextlib.suppress(NotImplementedError):
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._fs.pipe_file(path, data)

    def put_exclusive(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with contextlib.suppress(NotImplementedError):
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self._fs.open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            entries = self._fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        names = (str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in names if n and not n.startswith("."))

    def exists(self, key: str) -> bool:
        return bool(self._fs.exists(self._path(key)))


def open_store(uri: str) -> BlobStore:
    """A local directory for plain paths and file:// URIs, fsspec for every other scheme."""
    if uri.startswith("file://"):
        return LocalBlobStore(uri.removeprefix("file://"))
    if "://" in uri:
        return FsspecBlobStore(uri)
    return LocalBlobStore(uri)
