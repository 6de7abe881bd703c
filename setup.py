"""The build hook of the `pinlife` package (the rest is pyproject.toml).

The repository keeps its layout (service/, migrations/, protos/ at the top);
the installed import name is `pinlife`:

    service/     -> pinlife
    migrations/  -> pinlife.migrations (Alembic's scripts, package data)
    protos/      -> pinlife.v1 (the gRPC stubs, generated here, never committed)

A checkout gets the same names from `make gen` (an editable install maps
`pinlife` to service/, and the stubs are generated into service/v1/).
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def packages() -> list[str]:
    inner = find_packages(str(HERE / "service"), exclude=["v1", "v1.*"])  # v1: generated below
    return ["pinlife", *(f"pinlife.{name}" for name in inner), "pinlife.migrations", "pinlife.migrations.versions"]


class BuildWithStubs(build_py):
    """build_py, then protoc: protos/pinlife/v1/*.proto -> pinlife/v1/*_pb2*.py(i)
    in the build tree, so the wheel carries the stubs. An editable install
    skips it (`make gen` writes them into service/v1/)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        from grpc_tools import protoc  # a build requirement (pyproject.toml)

        protos = sorted((HERE / "protos" / "pinlife" / "v1").glob("*.proto"))
        if not protos:
            raise SystemExit(f"no .proto files under {HERE / 'protos'}")
        out = Path(self.build_lib)
        include = str(Path(protoc.__file__).parent / "_proto")
        args = ["protoc", f"-I{HERE / 'protos'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        args += [f"--pyi_out={out}", *map(str, protos)]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed on protos/pinlife/v1")
        (out / "pinlife" / "v1" / "__init__.py").touch()
        print(f"generated the stubs of {len(protos)} protos into {out / 'pinlife' / 'v1'}", file=sys.stderr)


setup(
    packages=packages(),
    package_dir={"pinlife": "service", "pinlife.migrations": "migrations"},
    cmdclass={"build_py": BuildWithStubs},
)
