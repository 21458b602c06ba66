"""Regenerate the Python code for the fti.v1 contracts (messages, gRPC stubs, .pyi stubs).

Run from anywhere: `python scripts/gen_proto.py`. The output is committed; a test regenerates
into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"


def generate(out_dir: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "fti").rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    # The mypy plugins are console scripts installed beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # gRPC stubs are only emitted for files with services; drop the empty ones.
    for empty in out_dir.rglob("*_pb2_grpc.py"):
        if "class " not in empty.read_text():
            empty.unlink()
            empty.with_suffix(".pyi").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)")
    args = parser.parse_args()
    generate(args.out)
    print(f"generated fti.v1 code under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
