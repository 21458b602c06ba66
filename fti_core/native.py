"""The feature worker's hot path, compiled to C with mypyc when it was built, and whether the
compiled form is the source's.

`scripts/build_native.py` (run by `scripts/bootstrap`) compiles `HOT_MODULES` in place: each
gets an extension module beside its `.py`, which Python imports first, and the SHA-256 of every
source goes into `MANIFEST`. Compiled, the same typed code takes ~20 % less CPU in the
processor's own work and 14-23 % less in the whole worker on a catch-up (the feature bench's
last two rounds; Faust, aiokafka and redis-py stay interpreted; bench/README.md), with the
same results. mypyc makes an int that reaches a `float` annotation a float, so no value that
may be an int is typed `float` alone
in these modules (tests/unit/fti_core/test_native.py checks it), and the stream/batch parity
tests run against the compiled form in CI. Classes other code subclasses are marked for it
(`mypyc_attr(allow_interpreted_subclasses=True)`).

A frozen dataclass keeps the `__init__` that `dataclasses` generates, and that one is Python
even in a compiled module: a `TileWrite` took ~0.6 µs to build, and the frozen dataclasses of
each entity update were ~5 % of the processor's time in live traffic. So the hot modules' frozen
dataclasses write `__init__` out with the same `object.__setattr__` calls, which mypyc compiles
to stores (~30 ns); they stay frozen, equal and hashable as before (test_native.py).

An extension module older than its source would run code that is no longer in the tree. So the
packages that hold hot modules call `guard()` before anything imports them: if the manifest
does not match every source, all hot modules are loaded from source (mypyc compiles them as one
group that calls itself directly, so a mix is not an option) and `status()` says why; the
worker logs it at start. `FTI_NATIVE=0` in the environment runs them from source too (to
compare the two, or to rule the compiled form out).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = [
    "HOT_MODULES",
    "MANIFEST",
    "check",
    "compiled_paths",
    "guard",
    "missing_toolchain",
    "running_compiled",
    "source_digests",
    "source_path",
    "status",
]

# The modules compiled together: the worker's per-event work (decode, ingest decisions, tile
# folds and texts, state records, re-keyed items). Typed for mypy --strict, which mypyc needs.
HOT_MODULES: tuple[str, ...] = (
    "feature_stream.aggregate",
    "feature_stream.caches",
    "feature_stream.codec",
    "feature_stream.decoders",
    "feature_stream.flushing",
    "feature_stream.ingest",
    "feature_stream.outbox",
    "feature_stream.processor",
    "feature_stream.records",
    "feature_stream.state",
    "featurestore.accepted",
    "featurestore.archive_layout",
    "featurestore.keys",
    "featurestore.online_tiles",
    "featurestore.tile_senders",
    "featurestore.values",
)

ROOT = Path(__file__).resolve().parent.parent  # where the project's packages sit side by side
MANIFEST = ROOT / "fti_core" / "native_build.json"

_REBUILD = "rebuild it with scripts/build_native.py"
_status: str | None = None


def source_path(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_paths(module: str, root: Path = ROOT) -> list[Path]:
    """The extension modules built for `module` (any of this Python's suffixes)."""
    src = source_path(module, root)
    return [p for s in importlib.machinery.EXTENSION_SUFFIXES if (p := src.with_name(src.stem + s)).exists()]


def source_digests(modules: Sequence[str] = HOT_MODULES, root: Path = ROOT) -> dict[str, str]:
    return {m: hashlib.sha256(source_path(m, root).read_bytes()).hexdigest() for m in modules}


def check(modules: Sequence[str] = HOT_MODULES, root: Path = ROOT, manifest: Path | None = None) -> tuple[bool, str]:
    """(use the compiled modules?, one line saying what runs and why)."""
    built = [m for m in modules if compiled_paths(m, root)]
    if not built:
        return False, "interpreted (not compiled: scripts/build_native.py)"
    manifest = manifest or root / MANIFEST.relative_to(ROOT)
    try:
        recorded: dict[str, str] = json.loads(manifest.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"interpreted: compiled modules without a readable {manifest.name}; {_REBUILD}"
    current = source_digests(modules, root)
    changed = sorted(m for m in modules if recorded.get(m) != current[m])
    if changed or len(built) != len(modules):
        stale = changed or sorted(set(modules) - set(built))
        return False, f"interpreted: the compiled hot path is older than {', '.join(stale)}; {_REBUILD}"
    return True, f"compiled (mypyc): {len(modules)} modules"


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the hot modules' `.py` files, ahead of the extension modules beside them."""

    def __init__(self, modules: Sequence[str], root: Path) -> None:
        self._paths = {m: source_path(m, root) for m in modules}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        src = self._paths.get(fullname)
        if src is None or not src.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, src)


def missing_toolchain() -> str | None:
    """What is missing to compile C extensions for this Python, if anything."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}); install gcc"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h); install python3-dev"
    return None


def guard() -> None:
    """Load every hot module from source unless the compiled ones match the sources (once)."""
    global _status
    if _status is not None:
        return
    if os.environ.get("FTI_NATIVE", "1") == "0":
        use, _status = False, "interpreted (FTI_NATIVE=0)"
    else:
        use, _status = check()
    if not use and any(compiled_paths(m) for m in HOT_MODULES):
        sys.meta_path.insert(0, _FromSource(HOT_MODULES, ROOT))


def status() -> str:
    """What runs the hot path, in one line (for the worker's start-up log)."""
    guard()
    assert _status is not None
    return _status


def running_compiled(module: ModuleType) -> bool:
    """Whether `module` was loaded from an extension module."""
    return not str(getattr(module, "__file__", "")).endswith(".py")
