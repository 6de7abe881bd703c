"""The package as an operator installs it: the wheel built from this tree
(setup.py's hook generates the gRPC stubs into it), installed into a fresh
venv, run from a folder that is not the checkout.

The fresh venv gets its dependencies without a network: the distributions
the wheel requires (its Requires-Dist, followed transitively, markers
evaluated) are linked from this venv into a folder on the fresh venv's path,
and nothing else is. So a runtime import of a module the package does not
declare (a dev extra, the checkout's tests) fails here as it would after
`pip install pinlife`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.e2e.harness import ROOT, Client, free_port

# What a build needs from the checkout (MANIFEST.in lists the same for an sdist).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "service", "migrations", "protos")


def _copy_tree(dest: Path) -> None:
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    shutil.rmtree(dest / "service" / "v1", ignore_errors=True)  # `make gen`'s stubs: the build makes its own


def _requirements_closure(wheel_metadata: str) -> set[str]:
    """The distributions a wheel needs at run time: its Requires-Dist
    (no extras), followed through what this venv has installed."""
    env = {"extra": ""}
    wanted = [Requirement(r) for r in Parser().parsestr(wheel_metadata).get_all("Requires-Dist") or []]
    seen: set[str] = set()
    while wanted:
        req = wanted.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for extra in req.extras:  # e.g. psycopg[binary]
            for sub in dist.requires or []:
                r = Requirement(sub)
                if r.marker is not None and r.marker.evaluate({"extra": extra}):
                    wanted.append(Requirement(str(r).split(";")[0]))
        wanted += [Requirement(r) for r in dist.requires or []]
    return seen


def _link_distributions(names: set[str], into: Path) -> None:
    """Each distribution's top-level files and folders (from its RECORD), linked."""
    into.mkdir()
    for name in names:
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            target = into / top
            if not target.exists() and (base / top).exists():
                target.symlink_to(base / top)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path  # the fresh venv's bin/


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel, and a fresh venv with it installed."""
    work = tmp_path_factory.mktemp("package")
    src, dist = work / "src", work / "dist"
    src.mkdir()
    _copy_tree(src)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("pinlife-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        wheel_metadata = zf.read(meta).decode()
    deps = work / "deps"
    _link_distributions(_requirements_closure(wheel_metadata), deps)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(purelib) / "pinlife-deps.pth").write_text(f"{deps}\n")
    return Installed(wheel, venv / "bin")


def test_the_wheel_holds_the_stubs_the_migrations_and_the_offices_file_under_pinlife(installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("pinlife-")}
    assert tops == {"pinlife"}  # no generic top-level name (service, gen, migrations, tests)
    assert "pinlife/v1/pin_service_pb2.py" in names and "pinlife/v1/audit_service_pb2_grpc.py" in names
    assert "pinlife/config/offices.toml" in names
    assert "pinlife/migrations/env.py" in names and "pinlife/migrations/script.py.mako" in names
    versions = sorted(n for n in names if n.startswith("pinlife/migrations/versions/") and n.endswith(".py"))
    assert [Path(v).name for v in versions] == sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))


def test_the_installed_pinlife_migrates_serves_and_answers_from_another_folder(installed, tmp_path, db_url):
    """On SQLite and PostgreSQL, from an empty folder, with nothing of the
    checkout on the path: make keys, check the configuration, migrate, serve,
    enrol and verify with the installed client, audit the history, check the
    store, stop."""
    bin = installed.bin
    home = tmp_path / "elsewhere"
    home.mkdir()
    port = free_port()
    env = {
        "PATH": f"{bin}:{os.environ['PATH']}",
        "HOME": str(home),
        "PINLIFE_DATABASE_URL": db_url,  # a fresh SQLite file or PostgreSQL database (tests/conftest.py)
        "PINLIFE_KEY_FILE": str(home / "keys.json"),
        "PINLIFE_LISTEN": f"127.0.0.1:{port}",
        "PINLIFE_TERMINAL": "package-test",
    }

    def pinlife(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(bin / "pinlife"), *args], cwd=home, env=env, capture_output=True, text=True, input=stdin, timeout=60
        )
        assert done.returncode == 0, f"pinlife {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    probe = (
        "import importlib.util, pinlife, pinlife.v1.pin_service_pb2 as p\n"
        "print(pinlife.__file__, p.__file__)\n"
        "print([m for m in ('pytest', 'trustme', 'tests', 'service', 'gen') if importlib.util.find_spec(m)])\n"
    )
    where, undeclared = subprocess.run(
        [str(bin / "python"), "-c", probe], cwd=home, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert undeclared == "[]"  # the dev extras and the checkout are not on the fresh venv's path
    assert str(ROOT) not in where and "site-packages/pinlife/" in where
    assert pinlife("--version").stdout.strip() == f"pinlife {metadata.version('pinlife')}"
    pinlife("dev-key", str(home / "keys.json"))
    pinlife("config", "check")
    assert pinlife("migrate").stdout.strip() == "migrated to head"
    server = subprocess.Popen(
        [str(bin / "pinlife"), "serve"], cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        client = Client(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while not client.serving():
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode() if server.stdout else ""
            time.sleep(0.05)
        client.close()
        pinlife("enroll", "card-pkg-1", "--pin", "user_certificate=1234")
        assert "CHECK_RESULT_OK" in pinlife("verify", "card-pkg-1", "user_certificate", "1234").stdout
        history = [json.loads(line)["event_type"] for line in pinlife("audit", "history", "card-pkg-1").stdout.splitlines()]
        assert history == ["CardEnrolled", "PinVerified"]
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out.decode()
    pinlife("check")
    assert not (home / "migrations").exists()
    assert sysconfig.get_paths()["purelib"] not in where  # the fresh venv's own site-packages, not this one's
