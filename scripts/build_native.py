"""Compile the feature worker's hot path (`fti_core.native.HOT_MODULES`) with mypyc, in place.

Run by `scripts/bootstrap`; a no-op when the compiled modules already match the sources. Each
module gets an extension module beside its `.py` (Python imports it first) and
`fti_core/native_build.json` records the sources' SHA-256, so a module edited later is loaded
from source until the next build (`fti_core.native.guard`). Without a C compiler, or with
`FTI_NATIVE=0`, the hot path stays interpreted: the same code, slower (fti_core/native.py).

    .venv/bin/python scripts/build_native.py [--force | --clean]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fti_core.native import (  # noqa: E402
    HOT_MODULES,
    MANIFEST,
    check,
    compiled_paths,
    missing_toolchain,
    source_digests,
    source_path,
)

GROUP = "fti_core.hot_path"  # the shared library the modules are compiled into: fti_core/hot_path__mypyc.*.so


def _clean() -> None:
    for m in HOT_MODULES:
        for p in compiled_paths(m):
            p.unlink()
    for p in (ROOT / "fti_core").glob("hot_path__mypyc.*"):
        p.unlink()
    MANIFEST.unlink(missing_ok=True)


@contextlib.contextmanager
def _output_kept_for_failure(log: Path) -> Iterator[None]:
    """mypyc's notes and the compiler's lines go to `log` (file descriptors, so the compiler's
    too); they are printed only if the build fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("wb") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        except BaseException:
            ok = False
            raise
        else:
            ok = True
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if not ok:
                sys.stderr.write(log.read_text(errors="replace"))


def _build() -> None:
    from mypyc.build import mypycify  # the dev extras' mypy: only needed to build
    from setuptools import Distribution  # type: ignore[import-untyped]

    digests = source_digests()  # taken before compiling: an edit meanwhile reads as stale
    with tempfile.TemporaryDirectory(prefix="fti-native-") as tmp, _output_kept_for_failure(Path(tmp) / "build.log"):
        cwd = Path.cwd()
        os.chdir(ROOT)  # mypy reads pyproject.toml's [tool.mypy] from here
        try:
            paths = [str(source_path(m).relative_to(ROOT)) for m in HOT_MODULES]
            ext = mypycify(paths, opt_level="3", group_name=GROUP, target_dir=str(Path(tmp) / "c"))
            dist = Distribution({"name": "fti-hot-path", "ext_modules": ext})
            dist.verbose = False  # one line per compiler call otherwise
            cmd: Any = dist.get_command_obj("build_ext")
            cmd.inplace = True
            cmd.build_temp = str(Path(tmp) / "obj")
            cmd.parallel = os.cpu_count() or 1
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
    MANIFEST.write_text(json.dumps({"sources": digests, "python": sys.version.split()[0]}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules: run interpreted")
    args = parser.parse_args(argv)
    if args.clean or os.environ.get("FTI_NATIVE", "1") == "0":
        _clean()
        print("==> hot path: interpreted" + (" (FTI_NATIVE=0)" if not args.clean else ""))
        return 0
    if not args.force and check()[0]:
        print("==> hot path: compiled, up to date")
        return 0
    missing = missing_toolchain()
    if missing is not None:
        _clean()
        print(f"==> hot path: interpreted ({missing} to compile it)", file=sys.stderr)
        return 0
    print(f"==> compiling the worker's hot path with mypyc ({len(HOT_MODULES)} modules, about a minute)", flush=True)
    started = time.monotonic()
    _clean()
    try:
        _build()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypyc exits on a type error, gcc raises: one line
        print(f"build_native: the hot path did not compile ({type(exc).__name__}, output above); "
              "it runs interpreted until it does", file=sys.stderr)  # fmt: skip
        return 1
    use, line = check()
    if not use:
        print(f"build_native: built, but {line}", file=sys.stderr)
        return 1
    print(f"==> hot path: {line} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
