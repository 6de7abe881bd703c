"""The Makefile's venv belongs to the Python that made it: one made by
another Python (or whose interpreter is gone) is made anew, saying so;
a Python older than 3.11 is refused in one line. `make -n` on a copy of
the Makefile with a stand-in venv: nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = "{}.{}".format(*sys.version_info[:2])

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def checkout(tmp_path: Path, venv_python: str | None) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    if venv_python is not None:
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /somewhere\n")
        python = tmp_path / ".venv" / "bin" / "python"
        if venv_python == "gone":
            python.symlink_to("/nonexistent/python3")
        else:
            python.write_text(f"#!/bin/sh\necho {venv_python}\n")
            python.chmod(0o755)
        (tmp_path / ".venv" / ".installed").touch()  # installed, after pyproject.toml
    return tmp_path


def make(where: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-n", "install", f"PYTHON={sys.executable}", *args], cwd=where, capture_output=True, text=True, timeout=60
    )


def test_a_venv_of_this_python_is_kept(tmp_path):
    done = make(checkout(tmp_path, THIS))
    assert done.returncode == 0 and "Nothing to be done" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("other", ["3.9", "gone"])
def test_a_venv_of_another_python_is_made_anew_saying_so(tmp_path, other):
    done = make(checkout(tmp_path, other))
    assert done.returncode == 0, done.stderr
    said = "Python 3.9" if other == "3.9" else "Python that is gone"
    assert f"make: .venv was made by {said}, not {sys.executable} ({THIS}): making it anew (make clean removes it)" in done.stdout
    lines = done.stdout.splitlines()
    assert lines.index("rm -rf .venv") < lines.index(f"{sys.executable} -m venv .venv")


def test_no_venv_is_made(tmp_path):
    done = make(checkout(tmp_path, None))
    assert done.returncode == 0 and "rm -rf" not in done.stdout and f"{sys.executable} -m venv .venv" in done.stdout


def test_a_python_older_than_3_11_is_refused_in_one_line(tmp_path):
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\ncase "$*" in *version_info\\ \\<*) exit 1;; *) echo 3.10;; esac\n')
    old.chmod(0o755)
    (tmp_path / "co").mkdir()
    where = checkout(tmp_path / "co", None)
    done = subprocess.run(["make", "install", f"PYTHON={old}"], cwd=where, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and not (where / ".venv").exists()
    assert done.stderr.splitlines()[0] == f"make: pinlife needs Python 3.11+; PYTHON={old} is 3.10: make PYTHON=python3.12 ..."
