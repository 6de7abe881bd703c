"""The package's code names itself only relatively: `service/` is installed as
`pinlife` (setup.py), and no module may depend on that name, so an import
from inside the package is `from ..store import x`, never `from pinlife.store
import x`. (The generated stubs in service/v1/ are protoc's and name
`pinlife.v1`; migrations/env.py is loaded by Alembic as a file.)"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def test_no_module_of_the_package_imports_it_by_its_installed_name():
    absolute = []
    for path in sorted(SERVICE.rglob("*.py")):
        if path.relative_to(SERVICE).parts[0] == "v1":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            absolute += [
                f"{path.relative_to(SERVICE.parent)}:{node.lineno}: {n}"
                for n in names
                if n.split(".")[0] in {"pinlife", "service"}
            ]
    assert absolute == []
