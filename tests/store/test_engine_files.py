"""The SQLite store's files are private (service/store/engine.py): a folder
made for the store is 0700, the database file 0600 and SQLite's -wal and
-shm files, which take the database file's mode, 0600 too; a folder that
existed already (say /tmp) is left as it is."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from sqlalchemy import text
from structlog.testing import capture_logs

from pinlife.store.engine import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def write_something(path: Path) -> dict[str, int]:
    """Open the store as the writer does, write, and look at the files while
    the connection is still open (the -wal and -shm files exist then)."""
    engine = make_engine(f"sqlite:///{path}", writer=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() >= 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
            modes = {p.name: mode(p) for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))}
    finally:
        engine.dispose()
    return modes


def test_a_new_store_in_a_new_folder_is_private(tmp_path):
    path = tmp_path / "var" / "pinlife" / "pinlife.db"
    with umask(0o022):  # the usual umask: files 0644 and folders 0755 unless made private
        modes = write_something(path)
    assert mode(tmp_path / "var") == 0o700 and mode(tmp_path / "var" / "pinlife") == 0o700
    assert modes == {"pinlife.db": 0o600, "pinlife.db-wal": 0o600, "pinlife.db-shm": 0o600}


def test_the_modes_do_not_depend_on_a_permissive_umask(tmp_path):
    path = tmp_path / "new" / "pinlife.db"
    with umask(0):
        modes = write_something(path)
    assert mode(path.parent) == 0o700
    assert set(modes.values()) == {0o600}


def test_an_existing_folder_is_left_as_it_is(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with umask(0o022):
        modes = write_something(shared / "pinlife.db")
    assert mode(shared) == 0o755
    assert set(modes.values()) == {0o600}


def test_an_existing_exposed_store_is_left_as_it_is_with_a_warning(tmp_path):
    path = tmp_path / "pinlife.db"
    path.touch()
    os.chmod(path, 0o644)
    with capture_logs() as logs:
        make_engine(f"sqlite:///{path}").dispose()
    assert mode(path) == 0o644
    [warning] = [e for e in logs if e["event"] == "store_file_exposed"]
    assert "chmod 600" in warning["message"] and warning["log_level"] == "warning"
