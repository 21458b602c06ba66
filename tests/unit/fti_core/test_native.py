"""The compiled hot path (`fti_core.native`): used only when it is the source's, and typed so
that compiling it cannot change a value."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from featurestore.online_layout import OnlineKey
from fti_core import native
from fti_core.native import HOT_MODULES, _FromSource, check, source_digests, source_path

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _tree(tmp_path: Path, compiled: bool) -> tuple[Path, list[str]]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    modules = ["pkg.a", "pkg.b"]
    for m in modules:
        name = m.split(".")[1]
        (pkg / f"{name}.py").write_text(f"WHO = {name!r}\n")
        if compiled:
            (pkg / f"{name}{SUFFIX}").write_bytes(b"not really a shared object")
    return tmp_path, modules


def test_a_tree_never_compiled_runs_interpreted(tmp_path: Path) -> None:
    root, modules = _tree(tmp_path, compiled=False)
    use, line = check(modules, root)
    assert not use and line.startswith("interpreted (not compiled")


def test_compiled_modules_are_used_only_while_the_manifest_matches_every_source(tmp_path: Path) -> None:
    root, modules = _tree(tmp_path, compiled=True)
    manifest = root / "build.json"
    assert check(modules, root, manifest) == (
        False,
        "interpreted: compiled modules without a readable build.json; rebuild it with scripts/build_native.py",
    )
    manifest.write_text(json.dumps({"sources": source_digests(modules, root)}))
    assert check(modules, root, manifest) == (True, "compiled (mypyc): 2 modules")
    (root / "pkg" / "b.py").write_text("WHO = 'edited'\n")
    use, line = check(modules, root, manifest)
    assert not use and "older than pkg.b;" in line
    (root / "pkg" / "b.py").write_text("WHO = 'b'\n")  # back as built
    (root / "pkg" / f"a{SUFFIX}").unlink()  # a module the build left out
    use, line = check(modules, root, manifest)
    assert not use and "older than pkg.a;" in line


def test_the_source_finder_loads_the_py_beside_an_extension_module(tmp_path: Path) -> None:
    root, modules = _tree(tmp_path, compiled=True)
    spec = _FromSource(modules, root).find_spec("pkg.a", None)
    assert spec is not None and spec.origin == str(root / "pkg" / "a.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)  # the bogus extension module beside it is never opened
    assert module.WHO == "a"
    assert _FromSource(modules, root).find_spec("pkg.other", None) is None


def test_the_hot_path_runs_compiled_wherever_it_could_be_built() -> None:
    """CI builds it (scripts/bootstrap): a build that silently fell back would fail here."""
    if os.environ.get("FTI_NATIVE", "1") == "0" or native.missing_toolchain() is not None:
        pytest.skip(f"interpreted by choice or for want of a toolchain: {native.status()}")
    assert native.status().startswith("compiled"), native.status()
    for m in HOT_MODULES:
        __import__(m)
        assert native.running_compiled(sys.modules[m]), m


def _float_without_int(annotation: ast.expr) -> bool:
    names = {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)}
    text = ast.unparse(annotation)
    return ("float" in names or "float" in text) and "int" not in names and "Scalar" not in names


# Functions whose `float` values are made by `float(...)` before they get there (`_number`,
# `_numbers`), or are timings: compiled, an int typed `float` would become a float.
FLOAT_ONLY = {
    "feature_stream.aggregate": {
        "_float_text",
        "_numbers",
        "_exact_sum",
        "_extreme",
        "_last",
        "_fold_min",
        "_fold_max",
        "_number",
        "add",
    },
    "feature_stream.flushing": {"Buffer", "__init__"},
    "feature_stream.processor": {"__init__"},
}


def test_no_value_that_may_be_an_int_is_typed_float_in_the_hot_path() -> None:
    """mypyc turns an int that reaches a `float` annotation into a float (10**20 became 1e+20
    in the tile stream's RESP packing): a float annotation without int is allowed only where
    the value is a float by construction."""
    found = []
    for m in HOT_MODULES:
        tree = ast.parse(source_path(m).read_text())
        allowed = FLOAT_ONLY.get(m, set())
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            annotations: list[ast.expr] = []
            if isinstance(scope, ast.ClassDef):
                annotations = [s.annotation for s in scope.body if isinstance(s, ast.AnnAssign)]
            else:
                args = [*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs]
                annotations = [a.annotation for a in args if a.annotation is not None]
                annotations += [s.annotation for s in ast.walk(scope) if isinstance(s, ast.AnnAssign)]
                annotations += [scope.returns] if scope.returns is not None else []
            if any(_float_without_int(a) for a in annotations) and scope.name not in allowed:
                found.append(f"{m}.{scope.name}")
    assert not found, f"typed float, may get an int: {found}"


# Frozen dataclasses of the hot modules built once per definitions or per read, not per event.
BUILT_RARELY = {"_TypeRules", "_Sources", "OnlineState", "ParsedArchive"}
# Arguments of the others (compiled, an `__init__` checks its arguments' types).
SAMPLE_ARGS: dict[str, tuple[object, ...]] = {
    "Update": (None, [], ["e1"], 2),
    "TileWrite": (OnlineKey("v", 1, "k"), 5, 6, {"60000:0": "[1,{}]"}, ["60000:60000"], {"e1": "[1,{}]"}, ["e0"]),
    "KeyChanges": ({}, {"e0"}),
    "Mapped": ("e1", 5, {"card_id": "c1"}, {"amount": 1.5}),
    "DeadLetter": (3, "why"),
}


def test_the_hot_paths_frozen_dataclasses_write_their_init_out_and_stay_frozen() -> None:
    """The `__init__` `dataclasses` generates runs as Python even when compiled (fti_core.native)."""
    checked = set()
    for m in HOT_MODULES:
        for name, cls in vars(importlib.import_module(m)).items():
            if not (isinstance(cls, type) and cls.__module__ == m and dataclasses.is_dataclass(cls)):
                continue
            if not cls.__dataclass_params__.frozen or name in BUILT_RARELY:  # type: ignore[attr-defined]
                continue
            code = getattr(cls.__dict__["__init__"], "__code__", None)  # compiled: none
            assert code is None or not code.co_qualname.startswith("__create_fn__"), (
                f"{m}.{name} is built by the __init__ dataclasses generates"
            )
            args = SAMPLE_ARGS[name]
            one = cls(*args)
            assert one == cls(*args) and [getattr(one, f.name) for f in dataclasses.fields(cls)] == list(args)
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(one, dataclasses.fields(cls)[0].name, None)
            checked.add(name)
    assert checked == set(SAMPLE_ARGS)
