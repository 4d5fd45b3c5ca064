"""Regenerate ``schemas/*_pb2.py`` and ``*_pb2.pyi`` from the ``.proto`` sources.

Run with ``python -m schemas.generate``; ``--check`` compares instead of writing and exits 1 on drift.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugin; return the files written."""
    from grpc_tools import protoc  # dev dependency, imported only when generating

    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if plugin is None:
        raise RuntimeError("protoc-gen-mypy not found next to the interpreter: install the dev extras")
    protos = sorted(p.name for p in SCHEMA_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{SCHEMA_DIR}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    return sorted(out_dir.glob("*_pb2.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed files")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        drift = [p.name for p in produced if (SCHEMA_DIR / p.name).read_bytes() != p.read_bytes()]
        if opts.check:
            for name in drift:
                print(f"schemas/{name} is out of date: run `make proto`", file=sys.stderr)
            return 1 if drift else 0
        for p in produced:
            shutil.copyfile(p, SCHEMA_DIR / p.name)
            print(f"wrote schemas/{p.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
