"""Vendor the console's browser libraries (`make console-vendor`): from the
npm packages that tools/console/package.json pins (installed by `npm ci`
from its package-lock.json) into service/console/static/vendor/, with their
licences, and a record of what came from where (vendor.json: package,
version, licence, file, sha256), which tests/unit/test_console_vendor.py
holds the files to. The output is committed: serving the console needs no
npm and no build step.

    python tools/console/vendor.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "service" / "console" / "static" / "vendor"

# npm package -> (the file served, its licence file), paths inside the package.
FILES = {
    "htmx.org": ("dist/htmx.min.js", "LICENSE"),
    "chart.js": ("dist/chart.umd.min.js", "LICENSE.md"),
    "@kurkle/color": (None, "LICENSE"),  # bundled into chart.umd.min.js: its licence travels with it
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    record = []
    for name, (served, licence) in FILES.items():
        package = HERE / "node_modules" / name
        meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
        slug = name.replace("@", "").replace("/", "-")
        entry = {"package": name, "version": meta["version"], "license": meta["license"]}
        if served:
            target = OUT / Path(served).name
            shutil.copyfile(package / served, target)
            entry |= {"file": target.name, "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
        shutil.copyfile(package / licence, OUT / f"LICENSE.{slug}")
        entry["license_file"] = f"LICENSE.{slug}"
        record.append(entry)
    (OUT / "vendor.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    names = ", ".join(f"{e['package']} {e['version']}" for e in record)
    print(f"vendored {names} into {OUT}")


if __name__ == "__main__":
    main()
