"""The committed generated code is what the .proto files produce, and contract changes are additive."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


Shape = dict[str, Any]

gen_proto = _load("gen_proto")
check_contracts = _load("check_contracts")


def test_committed_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    gen_proto.generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed_dir = ROOT / "proto"
    assert fresh, "protoc produced nothing"
    stale = [str(rel) for rel, data in fresh.items() if (committed_dir / rel).read_bytes() != data]
    assert not stale, f"generated code is out of date, run scripts/gen_proto.py: {stale}"
    committed = {
        p.relative_to(committed_dir) for p in (committed_dir / "fti").rglob("*_pb2*.py*") if p.suffix in (".py", ".pyi")
    }
    assert committed == {rel for rel in fresh if rel.suffix in (".py", ".pyi")}


def test_current_contracts_match_the_lock_without_breaking_changes() -> None:
    old = check_contracts.json.loads(check_contracts.LOCK.read_text())
    new = check_contracts.current_shape()
    assert check_contracts.breaking_changes(old, new) == []
    assert check_contracts.additions(old, new) == [], "additive change not recorded: run check_contracts.py --update"


@pytest.fixture
def shape() -> Shape:
    return check_contracts.current_shape()


def _mutated(shape: Shape, edit: Callable[[Shape], object]) -> list[str]:
    new = copy.deepcopy(shape)
    edit(new)
    return check_contracts.breaking_changes(shape, new)


def test_removed_field_is_breaking(shape: Shape) -> None:
    problems = _mutated(shape, lambda s: s["messages"]["fti.v1.Event"].pop("event_id"))
    assert problems == ["field fti.v1.Event.event_id (1) removed"]


def test_renumbered_field_is_breaking(shape: Shape) -> None:
    problems = _mutated(shape, lambda s: s["messages"]["fti.v1.Event"]["source"].update(number=99))
    assert problems == ["field fti.v1.Event.source: number changed 7 -> 99"]


def test_changed_type_is_breaking(shape: Shape) -> None:
    problems = _mutated(shape, lambda s: s["messages"]["fti.v1.PredictResponse"]["score"].update(type="TYPE_FLOAT"))
    assert problems == ["field fti.v1.PredictResponse.score: type changed 'TYPE_DOUBLE' -> 'TYPE_FLOAT'"]


def test_removed_enum_value_and_rpc_are_breaking(shape: Shape) -> None:
    def edit(s: Shape) -> None:
        s["enums"]["fti.v1.FeatureStatus"].pop("FEATURE_STATUS_STALE")
        s["services"]["fti.v1.InferenceService"].pop("PredictBatch")

    problems = _mutated(shape, edit)
    assert "enum value fti.v1.FeatureStatus.FEATURE_STATUS_STALE removed or renumbered" in problems
    assert "rpc fti.v1.InferenceService.PredictBatch removed or its signature changed" in problems


def test_new_field_is_additive_not_breaking(shape: Shape) -> None:
    def edit(s: Shape) -> None:
        s["messages"]["fti.v1.Event"]["trace_id"] = {
            "number": 8,
            "type": "TYPE_STRING",
            "label": "LABEL_OPTIONAL",
            "oneof": "",
        }

    new = copy.deepcopy(shape)
    edit(new)
    assert check_contracts.breaking_changes(shape, new) == []
    assert check_contracts.additions(shape, new) == ["field fti.v1.Event.trace_id"]
