"""A server that must not serve does not start: a database whose schema is
not this code's (unmigrated, behind, ahead), or, in production, a TLS
private key that others may read. It says why in one line. And the
development-mode warning says who is throttled together."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import structlog
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from pinlife.bootstrap.instance import STARTUP_REFUSALS
from pinlife.bootstrap.serving import Server, serve
from pinlife.config.access import load_access_config
from pinlife.config.settings import Settings
from pinlife.keys.file_modes import FileModeError
from pinlife.runtime import logs
from pinlife.store.engine import normalize_url
from pinlife.store.errors import StoreUnavailable
from pinlife.store.migrate import alembic_config, upgrade
from pinlife.store.schema_check import SchemaMismatch, check_schema
from tests.conftest import make_key_file
from tests.e2e.harness import ROOT, Client, ThreadedServer, free_port
from tests.e2e.test_access import Pki

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
BEHIND = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(HEAD).down_revision


@pytest.fixture
def log_lines():
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    yield buf
    structlog.reset_defaults()


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def _serve(settings: Settings, keys, access=None) -> int:
    """serve()'s exit status; one that is still serving after 20 s has not refused."""
    return asyncio.run(asyncio.wait_for(serve(settings, keys, access), timeout=20))


def _settings(url: str, **kw) -> Settings:
    return Settings(env="test", database_url=url, listen="127.0.0.1:0", writer="thread", **kw)


def _database(databases, backend: str, state: str) -> str:
    if state == "empty":
        return databases.create(backend, migrate=False)
    if state == "behind":
        url = databases.create(backend, migrate=False)
        upgrade(url, BEHIND)
        return url
    url = databases.create(backend)  # ahead: migrated by a newer pinlife
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    return url


MESSAGES = {
    "empty": f"the database is not migrated (this code's schema is revision {HEAD}): run `pinlife migrate` (`make migrate`)",
    "behind": f"the database is at schema revision {BEHIND}, behind this code's {HEAD}: run `pinlife migrate` (`make migrate`)",
    "ahead": f"the database is at schema revision 9999, newer than this code's {HEAD}: it was migrated by a newer pinlife",
}


@pytest.mark.parametrize("state", sorted(MESSAGES))
def test_a_database_not_at_the_code_s_schema_refuses_to_start_with_one_line(databases, backend, keys, log_lines, state):
    url = _database(databases, backend, state)
    with pytest.raises(SchemaMismatch) as err:
        check_schema(url)
    assert str(err.value).startswith(MESSAGES[state])
    assert _serve(_settings(url), keys) == 2  # it was SERVING, failing every call
    (line,) = [line for line in _lines(log_lines) if line["level"] == "error"]
    assert line["event"] == "refusing_to_start"
    assert line["message"].startswith(MESSAGES[state])


def test_a_migrated_database_starts(db_url, keys):
    check_schema(db_url)
    server = ThreadedServer(db_url, keys)
    client = Client(server.target)
    try:
        assert client.serving()
    finally:
        client.close()
        server.close()


def test_an_unreachable_database_is_unavailable_not_a_schema_refusal(keys):
    """Not among the refusals (exit 2, not restarted): serve retries it, then
    exits 3 for a restart (tests/e2e/test_operator_errors.py)."""
    port = free_port()
    with pytest.raises(StoreUnavailable, match=rf"the database at 127.0.0.1:{port} cannot be reached \(Connection refused\)"):
        Server(_settings(f"postgresql://postgres@127.0.0.1:{port}/pinlife"), keys)
    assert not issubclass(StoreUnavailable, STARTUP_REFUSALS)


def test_pinlife_serve_on_an_unmigrated_database_exits_with_the_command_to_run(tmp_path):
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    env = {
        **os.environ,
        "PINLIFE_ENV": "test",
        "PINLIFE_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}",
        "PINLIFE_KEY_FILE": str(key_file),
        "PINLIFE_LISTEN": f"127.0.0.1:{free_port()}",
        "PINLIFE_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pinlife.cli", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    refusals = [json.loads(line) for line in done.stderr.splitlines() if "refusing_to_start" in line]
    assert len(refusals) == 1 and "run `pinlife migrate` (`make migrate`)" in refusals[0]["message"]


# --- the TLS private key's mode ----------------------------------------------
def _start_and_stop(settings: Settings, keys, access) -> None:
    async def run():
        server = Server(settings, keys, access=access)
        await server.start()
        await server.stop(0)

    asyncio.run(run())


@pytest.fixture
def tls(tmp_path):
    pki = Pki(tmp_path)
    return pki, pki.access_file(), tmp_path / "server-key.pem"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_production_refuses_a_tls_key_others_may_read(db_url, keys, tls, log_lines):
    _, access_file, key = tls
    key.chmod(0o644)
    settings = replace(_settings(db_url), env="production", access_file=access_file)
    access = load_access_config(access_file)
    with pytest.raises(FileModeError, match=rf"the TLS private key \(\[tls\] key\) {key} .*mode 0644.*chmod 600 {key}"):
        Server(settings, keys, access=access)
    assert _serve(settings, keys, access) == 2
    (line,) = [line for line in _lines(log_lines) if line["level"] == "error"]
    assert line["event"] == "refusing_to_start" and f"chmod 600 {key}" in line["message"]
    key.chmod(0o600)
    _start_and_stop(settings, keys, access)  # the owner's alone: it starts


@pytest.mark.parametrize("backend", ["sqlite"])
def test_development_warns_of_a_tls_key_others_may_read_and_starts(db_url, keys, tls, log_lines):
    _, access_file, key = tls
    key.chmod(0o640)
    _start_and_stop(replace(_settings(db_url), access_file=access_file), keys, load_access_config(access_file))
    (warning,) = [line for line in _lines(log_lines) if line["event"] == "private_file_exposed"]
    assert warning["level"] == "warning" and f"chmod 600 {key}" in warning["message"]
