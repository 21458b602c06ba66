"""Fail on an in-place breaking change to the fti.v1 contracts.

The published shape of every message, enum and service in `fti.v1` is recorded in
`proto/fti/v1/contract.lock.json`. This check compares the current descriptors with it:
a removed or renumbered field, a changed field type or cardinality, a removed message,
enum value or RPC, or a changed RPC signature is breaking (exit 1: put it in `fti.v2`).
New fields, messages, values and RPCs are additive: recorded with `--update`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

import fti.v1

LOCK = Path(__file__).resolve().parent.parent / "proto" / "fti" / "v1" / "contract.lock.json"

Shape = dict[str, Any]


def _field_type(f: descriptor_pb2.FieldDescriptorProto) -> str:
    return f.type_name.lstrip(".") if f.type_name else descriptor_pb2.FieldDescriptorProto.Type.Name(f.type)


def _messages(prefix: str, msgs: Any, out: Shape) -> None:
    for m in msgs:
        name = f"{prefix}.{m.name}"
        out["messages"][name] = {
            f.name: {
                "number": f.number,
                "type": _field_type(f),
                "label": descriptor_pb2.FieldDescriptorProto.Label.Name(f.label),
                "oneof": m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else "",
            }
            for f in m.field
        }
        _enums(name, m.enum_type, out)
        _messages(name, m.nested_type, out)


def _enums(prefix: str, enums: Any, out: Shape) -> None:
    for e in enums:
        out["enums"][f"{prefix}.{e.name}"] = {v.name: v.number for v in e.value}


def current_shape() -> Shape:
    """The shape of every .proto file compiled into the fti.v1 package."""
    out: Shape = {"messages": {}, "enums": {}, "services": {}}
    for mod in sorted(pkgutil.iter_modules(fti.v1.__path__), key=lambda m: m.name):
        if not mod.name.endswith("_pb2"):
            continue
        fd: FileDescriptor = importlib.import_module(f"fti.v1.{mod.name}").DESCRIPTOR
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        _messages(proto.package, proto.message_type, out)
        _enums(proto.package, proto.enum_type, out)
        for s in proto.service:
            out["services"][f"{proto.package}.{s.name}"] = {
                m.name: {"input": m.input_type.lstrip("."), "output": m.output_type.lstrip(".")} for m in s.method
            }
    return out


def breaking_changes(old: Shape, new: Shape) -> list[str]:
    problems = []
    for msg, fields in old["messages"].items():
        if msg not in new["messages"]:
            problems.append(f"message {msg} removed")
            continue
        by_number = {f["number"]: n for n, f in new["messages"][msg].items()}
        for fname, f in fields.items():
            cur = new["messages"][msg].get(fname)
            if cur is None:
                taken = by_number.get(f["number"])
                what = f"renamed to {taken}" if taken else "removed"
                problems.append(f"field {msg}.{fname} ({f['number']}) {what}")
                continue
            for key in ("number", "type", "label", "oneof"):
                if cur[key] != f[key]:
                    problems.append(f"field {msg}.{fname}: {key} changed {f[key]!r} -> {cur[key]!r}")
    for enum, values in old["enums"].items():
        cur_values = new["enums"].get(enum)
        if cur_values is None:
            problems.append(f"enum {enum} removed")
            continue
        for vname, number in values.items():
            if cur_values.get(vname) != number:
                problems.append(f"enum value {enum}.{vname} removed or renumbered")
    for svc, methods in old["services"].items():
        cur_methods = new["services"].get(svc)
        if cur_methods is None:
            problems.append(f"service {svc} removed")
            continue
        for mname, sig in methods.items():
            if cur_methods.get(mname) != sig:
                problems.append(f"rpc {svc}.{mname} removed or its signature changed")
    return problems


def additions(old: Shape, new: Shape) -> list[str]:
    added = [f"message {m}" for m in new["messages"] if m not in old["messages"]]
    for m, fields in new["messages"].items():
        added += [f"field {m}.{f}" for f in fields if m in old["messages"] and f not in old["messages"][m]]
    added += [f"enum {e}" for e in new["enums"] if e not in old["enums"]]
    added += [f"service {s}" for s in new["services"] if s not in old["services"]]
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="record additive changes in the lock file")
    args = parser.parse_args()
    new = current_shape()
    old: Shape = json.loads(LOCK.read_text()) if LOCK.exists() else {"messages": {}, "enums": {}, "services": {}}
    problems = breaking_changes(old, new)
    if problems:
        print("breaking changes to fti.v1 (make them in a new package version, fti.v2):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    added = additions(old, new)
    if added and not args.update:
        print("fti.v1 has additive changes not yet recorded; run scripts/check_contracts.py --update:", file=sys.stderr)
        for a in added:
            print(f"  + {a}", file=sys.stderr)
        return 1
    if args.update:
        LOCK.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(added)} additive change(s) in {LOCK.name}", file=sys.stderr)
    else:
        print(f"fti.v1 contracts: no breaking change ({len(new['messages'])} messages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
