"""An operator's mistake is one line naming the cause and the fix, never a
traceback, and an exit code a supervisor can act on (service/cli/exits.py):
2 for what a person must fix (not restarted), 3 for a database that cannot
be reached (restarted); `serve` retries an unreachable database at start
for [store] startup_retry_seconds first. Each case runs `pinlife serve`,
`migrate` and `check` as an operator does (`serve`, and some of the others,
in their own processes)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pinlife.bootstrap import serving
from pinlife.config.settings import Settings
from pinlife.keys.ring import KeyRing, write_new_key_file
from pinlife.store.engine import normalize_url
from pinlife.store.errors import StoreRefused, StoreUnavailable
from pinlife.store.event_store import EventStore
from pinlife.store.key_checks import key_problems
from pinlife.store.migrate import upgrade
from tests.conftest import _pg_url
from tests.e2e.harness import ROOT, cli, cli_process, refusing_port

COMMANDS = ("migrate", "check", "serve")
CANNOT_RUN, UNAVAILABLE = 2, 3


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "keys.json"
    write_new_key_file(path)
    return path


def _env(url: str, key_file: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
    return {
        **base,
        "PINLIFE_ENV": "test",
        "PINLIFE_DATABASE_URL": url,
        "PINLIFE_KEY_FILE": str(key_file),
        "PINLIFE_LISTEN": "127.0.0.1:0",
        "PINLIFE_LOG_FORMAT": "json",
        "PINLIFE_WRITER": "thread",
        "PINLIFE_STARTUP_RETRY_SECONDS": "0",
        **extra,
    }


def _error_lines(command: str, stderr: str) -> list[str]:
    """What the command said went wrong: its `pinlife: ...` lines, or for
    `serve` its error-level log lines (JSON) and any plain line."""
    lines = []
    for line in stderr.splitlines():
        if line.startswith("INFO  [alembic"):
            continue  # Alembic's own progress lines (migrate)
        try:
            logged = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if logged.get("level") == "error":
            lines.append(f"{logged['event']}: {logged['message']}")
    return lines


def run(command: str, env: dict[str, str], process: bool = False) -> tuple[int, str]:
    """`pinlife COMMAND`: its exit code and its one line. `serve` in its own
    process; the others in their own too with `process`, else in this one
    (harness.cli: what escapes is a traceback and 1, as a process gives)."""
    done = (cli_process if process or command == "serve" else cli)(command, env=env)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    lines = _error_lines(command, done.stderr)
    assert len(lines) == 1, (command, done.returncode, done.stderr)
    if command != "serve":
        assert done.stdout == "", done.stdout
    return done.returncode, lines[0]


def _in_every_command(env: dict[str, str], code: int, *expected: str, commands=COMMANDS, process=False) -> None:
    for command in commands:
        returncode, line = run(command, env, process)
        assert returncode == code, (command, returncode, line)
        for part in expected:
            assert part in line, (command, line)
        if command != "serve":
            assert line.startswith("pinlife: "), line


# --- the URL, before anything connects ------------------------------------------------
@pytest.mark.parametrize(
    "url, expected, commands",
    [
        ("mysql://app@db.example/pinlife", "pinlife stores in SQLite or PostgreSQL, not 'mysql': give sqlite:///FILE", COMMANDS),
        ("postgresql+psycopg2://app@db.example/pinlife", "the driver 'psycopg2' is not pinlife's: give postgresql://", ["check"]),
        ("garbage", "'garbage' is not a database URL (not a URL): give sqlite:///FILE", ["check"]),
        ("postgresql://app:secret@db.example:fivefour/pinlife", "(its port is not a number): give sqlite:///FILE", ["check"]),
    ],
)
def test_an_unknown_driver_or_a_malformed_url_is_a_configuration_line(key_file, url, expected, commands):
    env = _env(url, key_file)
    where = "configuration: PINLIFE_DATABASE_URL ([store] database_url)"
    _in_every_command(env, CANNOT_RUN, where, expected, commands=commands, process=len(commands) > 1)
    assert "secret" not in run("check", env)[1]  # a password is never printed


@pytest.fixture
def refused_port():
    with refusing_port() as port:
        yield port


# --- PostgreSQL: down, missing, login refused, privilege missing -----------------------
@pytest.mark.postgres
def test_a_database_that_is_down_is_exit_3_after_serve_retried_it(key_file, pg_admin, refused_port):
    port = refused_port  # nothing listens there
    env = _env(f"postgresql://postgres@127.0.0.1:{port}/pinlife", key_file)
    expected = f"the database at 127.0.0.1:{port} cannot be reached (Connection refused): start PostgreSQL there"
    _in_every_command(env, UNAVAILABLE, expected, commands=("migrate", "check"), process=True)

    done = cli_process("serve", env={**env, "PINLIFE_STARTUP_RETRY_SECONDS": "1.5"})  # two tries at least, however busy the host
    assert done.returncode == UNAVAILABLE and "Traceback" not in done.stderr, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    retries = [line for line in logged if line["event"] == "database_unavailable" and line["level"] == "warning"]
    assert len(retries) >= 2 and all(expected in r["message"] for r in retries)
    waits = [r["retry_in_s"] for r in retries]
    assert waits[0] <= serving.RETRY_FIRST and all(w > 0 for w in waits)  # backoff from a quarter second
    (final,) = [line for line in logged if line["level"] == "error"]
    assert final["event"] == "database_unavailable"
    assert final["message"].startswith("gave up after ") and "PINLIFE_STARTUP_RETRY_SECONDS" in final["message"]
    assert expected in final["message"]


@pytest.mark.postgres
def test_sigterm_while_serve_waits_for_the_database_exits_0(key_file, pg_admin, refused_port):
    env = _env(f"postgresql://postgres@127.0.0.1:{refused_port}/pinlife", key_file, PINLIFE_STARTUP_RETRY_SECONDS="60")
    proc = subprocess.Popen([sys.executable, "-m", "pinlife.cli", "serve"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"database_unavailable"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.postgres
def test_a_database_that_does_not_exist_says_createdb(key_file, pg_admin):
    name = f"pinlife_missing_{uuid.uuid4().hex[:8]}"
    env = _env(_pg_url(name), key_file)
    _in_every_command(
        env, CANNOT_RUN, f'the database "{name}" does not exist on ', f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}"
    )


@pytest.mark.postgres
def test_a_login_refused_names_the_user_and_where_to_fix_it(key_file, pg_admin):
    env = _env(_pg_url("test").replace("postgres@", "pinlife_nobody@", 1), key_file)
    _in_every_command(env, CANNOT_RUN, 'did not let user "pinlife_nobody" in', "PINLIFE_DATABASE_URL", "pg_hba.conf")


@pytest.fixture
def role_without_privileges(pg_admin):
    role = f"pinlife_norights_{uuid.uuid4().hex[:8]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    yield role
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.mark.postgres
def test_a_role_without_privileges_is_told_to_migrate_as_the_owner_and_grant(databases, key_file, role_without_privileges):
    role = role_without_privileges
    url = databases.create("postgres")  # migrated by the owner
    env = _env(url.replace("postgres@", f"{role}@", 1), key_file)
    _in_every_command(env, CANNOT_RUN, f'user "{role}" may not do this', "permission denied", f"`pinlife grants {role}`")


# --- the schema, the key file, the clock ------------------------------------------------
def _ahead(url: str) -> None:
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()


def test_a_schema_ahead_of_the_code_is_refused_by_every_command(databases, backend, key_file):
    url = databases.create(backend)
    _ahead(url)
    _in_every_command(_env(url, key_file), CANNOT_RUN, "at schema revision 9999, newer than this code's", "newer pinlife")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_schema_behind_the_code_says_pinlife_migrate(databases, backend, key_file):
    url = databases.create(backend, migrate=False)
    upgrade(url, "0001")
    _in_every_command(_env(url, key_file), CANNOT_RUN, "behind this code's", "run `pinlife migrate`", commands=("check", "serve"))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_check_with_a_key_the_store_knows_under_another_value_names_the_key_id(db_url, key_file):
    store = EventStore(db_url)
    try:
        assert key_problems(store, KeyRing.load(key_file), datetime.now(UTC)) == []  # recorded
    finally:
        store.close()
    data = json.loads(key_file.read_text())
    data["integrity"]["keys"]["integrity-1"] = base64.b64encode(os.urandom(32)).decode()
    key_file.write_text(json.dumps(data))
    _in_every_command(
        _env(db_url, key_file),
        CANNOT_RUN,
        "the integrity key 'integrity-1' is not the key this store was used with",
        "restore the key file",
        commands=("check", "serve"),
    )


def test_a_missing_key_file_is_exit_2(tmp_path, databases):
    url = databases.create("sqlite")
    missing = tmp_path / "none.json"
    _in_every_command(_env(url, missing), CANNOT_RUN, f"key file {missing} does not exist", commands=("check", "serve"))


def test_a_sqlite_store_that_cannot_be_made_or_is_not_a_database(tmp_path, key_file):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    _in_every_command(
        _env(f"sqlite:///{blocked}/pinlife.db", key_file),
        CANNOT_RUN,
        f"cannot make the SQLite store {blocked}/pinlife.db",
        commands=("migrate", "serve"),
    )
    other = tmp_path / "notes.db"
    other.write_text("not a database, but long enough to be read as a header by SQLite " * 20)
    other.chmod(0o600)
    _in_every_command(
        _env(f"sqlite:///{other}", key_file), CANNOT_RUN, f"{other} is not a usable SQLite database", "names the wrong file"
    )


def test_a_clock_out_of_range_is_a_configuration_line(tmp_path, key_file):
    env = _env(f"sqlite:///{tmp_path / 'pinlife.db'}", key_file, PINLIFE_CLOCK="shift:1e20")
    _in_every_command(
        env, CANNOT_RUN, "configuration: PINLIFE_CLOCK ([server] clock) 'shift:1e20': the clock would be out of range"
    )


# --- the retry itself, in this process -------------------------------------------------
def test_wait_for_the_database_backs_off_with_jitter_and_gives_up(monkeypatch):
    tries: list[float] = []

    def down(url: str) -> None:
        tries.append(time.monotonic())
        if len(tries) < 4:
            raise StoreUnavailable("down")

    monkeypatch.setattr(serving, "reach", down)
    monkeypatch.setattr(serving, "RETRY_FIRST", 0.02)
    settings = Settings(env="test", database_url="sqlite://", startup_retry_seconds=5)

    async def wait(s: Settings) -> bool:
        return await serving.wait_for_database(s, asyncio.Event())

    assert asyncio.run(wait(settings)) is True and len(tries) == 4  # up at the fourth try
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= 0.01 and gaps[2] >= 0.04  # doubling, each at least half its bound

    def always_down(url: str) -> None:
        tries.append(time.monotonic())
        raise StoreUnavailable("down")

    tries.clear()
    monkeypatch.setattr(serving, "reach", always_down)
    with pytest.raises(StoreUnavailable, match=r"gave up after \d+ attempts in 0.2 s .*: down"):
        asyncio.run(wait(replace(settings, startup_retry_seconds=0.2)))
    assert len(tries) >= 3

    def refused(url: str) -> None:
        tries.append(time.monotonic())
        raise StoreRefused("no such database")

    tries.clear()
    monkeypatch.setattr(serving, "reach", refused)
    with pytest.raises(StoreRefused):
        asyncio.run(wait(settings))
    assert len(tries) == 1  # not retried: a person must act
