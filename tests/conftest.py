"""Shared fixtures: throwaway databases on SQLite and PostgreSQL, each made
by running the Alembic migrations (never create_all).

PostgreSQL: PINLIFE_TEST_POSTGRES_URL (default: the local server,
postgresql://postgres@127.0.0.1:5432/test) is the admin connection; each test
creates its own database there and drops it afterwards. Without a reachable
server the Postgres cases skip with the reason, unless
PINLIFE_REQUIRE_POSTGRES=1 (as in .ci/run), where they fail.

The migrations run once per test process and backend, into a template (a
PostgreSQL template database, a SQLite file); each test's database is a copy
of it (CREATE DATABASE ... TEMPLATE, a file copy). Tests that exercise the
migrations themselves ask for an unmigrated database (`migrate=False`).

A test process's PostgreSQL databases are made ahead and dropped after
their test by threads of that process (PgDatabases), off the tests' path:
CREATE DATABASE takes a tenth of a second, and DROP DATABASE makes the
server take a checkpoint (PostgreSQL 15). The session ends once the last
is dropped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import shutil
import threading
import uuid
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pinlife.store.engine import normalize_url
from pinlife.store.migrate import upgrade
from tests.keys import CHECKPOINT, INTEGRITY, ring
from tests.pg_reset import Template, reset


def pytest_configure(config):
    """With pytest-xdist's `load` distribution, tests are handed to workers at
    most a few at a time (--maxschedchunk, unless given): by default each
    worker first gets a quarter of its share in one consecutive run, and the
    end-to-end tests, collected first, made one worker's run most of the
    suite's time while the other one had finished."""
    if hasattr(config.option, "maxschedchunk") and config.option.maxschedchunk is None:
        config.option.maxschedchunk = 4


PG_ADMIN_URL = normalize_url(os.environ.get("PINLIFE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
REQUIRE_PG = os.environ.get("PINLIFE_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_admin():
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        engine.dispose()
        reason = f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string()}: {type(exc).__name__}"
        if REQUIRE_PG:
            pytest.fail(reason + " (PINLIFE_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    yield engine
    engine.dispose()


def _pg_url(name: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated to head, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "pinlife-template.db"
    upgrade(f"sqlite:///{path}")  # the migration engine is disposed: the WAL is checkpointed into the file
    return path


@pytest.fixture(scope="session")
def pg_template(pg_admin):
    """A PostgreSQL database migrated to head, the template of each test's."""
    name = f"pinlife_template_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(_pg_url(name))
        yield name
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class PgDatabases:
    """The throwaway PostgreSQL databases of a test process, made and dropped
    off the tests' path by two threads of their own (each with its own
    connection): READY migrated copies of the template are made ahead of the
    tests that will ask for them, and a test hands its databases back and
    goes on. A database handed back is reset to the template's state and
    made ready again when only rows changed in it (tests/pg_reset.py: about
    a sixth of what making and dropping one costs the server), dropped
    otherwise. Closing drops the rest."""

    READY = 3

    def __init__(self, template: str) -> None:
        self.template = template
        self.template_state = Template.read(_pg_url(template))
        self.engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        self.to_make: queue.Queue[bool] = queue.Queue()  # True: make one; False: stop
        self.to_drop: queue.Queue[str | None] = queue.Queue()  # None: stop
        self.ready: queue.Queue[str | BaseException] = queue.Queue()
        self.reset_ahead = 0  # databases made ready by a reset: as many requests to make one are skipped
        self.lock = threading.Lock()
        self.closing = False
        self.failed: list[tuple[str, str]] = []
        self.threads = [
            threading.Thread(target=self._make, name="pg-make", daemon=True),
            threading.Thread(target=self._drop, name="pg-drop", daemon=True),
        ]
        for t in self.threads:
            t.start()
        for _ in range(self.READY):
            self.to_make.put(True)

    def take(self) -> str:
        """A migrated database, made ahead; another is made for the next test."""
        made = self.ready.get(timeout=120)
        if isinstance(made, BaseException):
            raise made
        self.to_make.put(True)
        return made

    def drop(self, names: list[str]) -> None:
        for name in names:
            self.to_drop.put(name)

    def _make(self) -> None:
        while self.to_make.get():
            with self.lock:
                if self.reset_ahead:
                    self.reset_ahead -= 1
                    continue
            name = f"pinlife_test_{uuid.uuid4().hex[:12]}"
            try:
                with self.engine.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            except Exception as exc:  # noqa: BLE001 - the test that takes it gets it
                self.ready.put(exc)
            else:
                self.ready.put(name)

    def _drop(self) -> None:
        while (name := self.to_drop.get()) is not None:
            if not self.closing:
                if self._reset(name):
                    with self.lock:
                        self.reset_ahead += 1
                    self.ready.put(name)
                    continue
            self._drop_now(name)

    def _drop_now(self, name: str) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:  # noqa: BLE001 - reported when the session ends
            self.failed.append((name, f"{type(exc).__name__}: {exc}"))

    def _reset(self, name: str) -> bool:
        try:
            with self.engine.connect() as conn:
                return reset(conn, _pg_url(name), name, self.template_state)
        except Exception:  # noqa: BLE001 - not a copy of the template (an unmigrated database, a schema changed): dropped
            return False

    def close(self) -> None:
        """Once every database handed back, and each made ahead and not taken, is dropped."""
        self.to_make.put(False)
        self.threads[0].join()
        self.closing = True  # what is handed back now is dropped, not reset
        self.to_drop.put(None)
        self.threads[1].join()
        while not self.ready.empty():
            made = self.ready.get()
            if isinstance(made, str):
                self._drop_now(made)
        self.engine.dispose()
        if self.failed:
            raise RuntimeError(f"test databases not dropped: {self.failed}")


@pytest.fixture(scope="session")
def pg_databases(pg_template):
    pool = PgDatabases(pg_template)
    yield pool
    pool.close()


class Databases:
    """Makes throwaway databases (migrated copies of a template, or empty
    ones) and has them dropped at the end."""

    def __init__(self, tmp_path: Path, request):
        self.tmp_path = tmp_path
        self.request = request
        self.pg_names: list[str] = []
        self.pool: PgDatabases | None = None

    def create(self, backend: str, migrate: bool = True) -> str:
        if backend == "sqlite":
            path = self.tmp_path / f"pinlife-{uuid.uuid4().hex[:8]}.db"
            if migrate:
                shutil.copyfile(self.request.getfixturevalue("sqlite_template"), path)
            return f"sqlite:///{path}"
        self.pool = self.request.getfixturevalue("pg_databases")  # asked for now: teardown may not ask
        if migrate:
            name = self.pool.take()
        else:
            name = f"pinlife_test_{uuid.uuid4().hex[:12]}"
            with self.request.getfixturevalue("pg_admin").connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.pg_names.append(name)
        return _pg_url(name)

    def drop_all(self) -> None:
        if self.pool is not None:
            self.pool.drop(self.pg_names)


@pytest.fixture
def databases(tmp_path, request):
    dbs = Databases(tmp_path, request)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="module")
def module_databases(tmp_path_factory, request):
    """Databases kept for a module's tests (servers they share)."""
    dbs = Databases(tmp_path_factory.mktemp("module-databases"), request)
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(databases, backend) -> str:
    """A freshly migrated database of each backend."""
    return databases.create(backend)


def make_key_file(path: Path, keys: dict[str, bytes], current: str) -> Path:
    """A key file with these verifier keys and the shared test integrity and checkpoint keys."""
    b64 = lambda v: base64.b64encode(v).decode()  # noqa: E731
    integrity = {"current": INTEGRITY.current, "keys": {INTEGRITY.current: b64(INTEGRITY.key(INTEGRITY.current))}}
    checkpoint = {"origin": CHECKPOINT.origin, "seed": b64(CHECKPOINT.seed)}
    body = {"current": current, "keys": {k: b64(v) for k, v in keys.items()}, "integrity": integrity, "checkpoint": checkpoint}
    path.write_text(json.dumps(body))
    path.chmod(0o600)
    return path


@pytest.fixture
def keys():
    return ring("test-1", {"test-1": os.urandom(32)})


@pytest.fixture(autouse=True)
def _plain_log_tracebacks():
    """The service's log lines in a test's captured output, as structlog
    writes them by default, but with a plain traceback: its default (rich,
    with every frame's locals) takes a good part of a second per logged
    exception. Before each test: a test that configures logging itself puts
    back structlog's defaults when it ends."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        context_class=dict,
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
