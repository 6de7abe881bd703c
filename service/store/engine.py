"""Engines for SQLite and PostgreSQL, set up for durability.

SQLite: WAL with synchronous=FULL (an acknowledged commit survives a crash
of the process or the machine); writers take the lock at BEGIN IMMEDIATE, so
two processes never deadlock on a lock upgrade. The database file is
private: a folder this module creates for it is 0700, a database file it
creates is 0600 before SQLite opens it, and SQLite gives its -wal and -shm
files the database file's mode. An existing folder (say /tmp) is never
changed; an existing database file readable by group or others is left as
it is, with a warning (chmod 600 it, and its -wal and -shm).

PostgreSQL: psycopg 3, default synchronous_commit (on), bounded waits (see
the constants below). A hung database path (packets held, not refused)
that a kernel still acknowledges is not caught by any of them: the
group-commit writer's batch deadline is what answers the callers then
(service/app/writer.py, BATCH_DEADLINE); these bound how long such a
connection lives on.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

log = structlog.get_logger()

# PostgreSQL waits, all bounded:
CONNECT_TIMEOUT = 2  # s: a new connection (libpq's smallest effective value)
POOL_TIMEOUT = 5.0  # s: waiting for a free pooled connection
KEEPALIVES_IDLE = 2  # s of silence on an idle connection before the first probe ...
KEEPALIVES_INTERVAL = 1  # ... then a probe every second ...
KEEPALIVES_COUNT = 3  # ... and the connection is dead after 3 unanswered
TCP_USER_TIMEOUT_MS = 5000  # ms that sent data may stay unacknowledged (a dead peer, a dropped path)
STATEMENT_TIMEOUT_MS = 10000  # server side: one statement
LOCK_TIMEOUT_MS = 10000  # server side: one lock wait (a conflict, retried by batch.run_batch)
# Writer engines only: the server ends a write transaction left idle this long
# (its client's path went silent mid-transaction), so the row locks it holds
# (log_head) do not stop every other instance. A batch never idles in a
# transaction; readers may (a long rebuild between fetches), so not them.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 10000
# Writer engines also plan without sequential scans (enable_seqscan=off):
# every write-path statement is a key lookup, and psycopg prepares a
# statement at its fifth run; PostgreSQL may then keep one generic plan for
# it, made while a table is small (a new store, a new terminal table, or no
# autovacuum ANALYZE since), which would scan the whole table on every batch
# for the connection's life, slower as the table grows. A statement that has
# no index to use still runs (the setting only weighs plans).
WRITER_PLANNING = "-c enable_seqscan=off"

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600

_warned: set[str] = set()


def normalize_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


# The databases pinlife stores in, with the drivers it ships (psycopg 3 for
# PostgreSQL, the standard library's sqlite3).
KNOWN_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg"), "postgres": ("",)}
URL_FORMS = "sqlite:///FILE or postgresql://USER@HOST[:PORT]/DB"


def url_problem(url: str) -> str | None:
    """What is wrong with a database URL before anything connects: one
    sentence naming the fix, or None."""
    try:
        u = make_url(url)
    except Exception as exc:  # noqa: BLE001 - ArgumentError, or ValueError for a port that is not a number
        detail = "its port is not a number" if isinstance(exc, ValueError) else "not a URL"
        shown = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)  # no password in a message
        return f"{shown!r} is not a database URL ({detail}): give {URL_FORMS}"
    backend, _, driver = u.drivername.partition("+")
    if backend not in KNOWN_DRIVERS:
        return f"{display_url(url)}: pinlife stores in SQLite or PostgreSQL, not {backend!r}: give {URL_FORMS}"
    if driver not in KNOWN_DRIVERS[backend]:
        return f"{display_url(url)}: the driver {driver!r} is not pinlife's: give {backend}:// without a driver (it uses {KNOWN_DRIVERS[backend][-1]})"
    if backend == "sqlite" and u.database and u.database.startswith("file:"):
        return None
    if backend != "sqlite" and not u.database:
        return f"{display_url(url)} names no database: give {URL_FORMS}"
    return None


def display_url(url: str) -> str:
    """A database URL for messages: its password, if any, as ***."""
    return make_url(url).render_as_string(hide_password=True)


def postgres_connect_args(*, writer: bool) -> dict:
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
    if writer:
        options += f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS} {WRITER_PLANNING}"
    return {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "pinlife",
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE,
        "keepalives_interval": KEEPALIVES_INTERVAL,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "options": options,
    }


def make_engine(url: str, *, writer: bool = False, pool_size: int = 5) -> Engine:
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            prepare_sqlite_file(Path(u.database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=4,
            pool_timeout=POOL_TIMEOUT,
            hide_parameters=True,
        )
        _sqlite_setup(engine, begin="BEGIN IMMEDIATE" if writer else "BEGIN")
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=4,
        pool_timeout=POOL_TIMEOUT,
        pool_pre_ping=True,
        hide_parameters=True,  # never log bound values (verifiers)
        # Fail fast when the database is gone instead of hanging a caller.
        connect_args=postgres_connect_args(writer=writer),
    )


def prepare_sqlite_file(path: Path) -> None:
    """Make the folders missing on the way to `path` (0700 each) and an empty
    database file (0600) if there is none, before SQLite opens it: SQLite
    creates the -wal and -shm files with the database file's mode. Nothing
    that exists already is changed."""
    _make_private_folders(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        _warn_if_exposed(path)
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)  # exactly 0600, whatever the umask
    finally:
        os.close(fd)


def _make_private_folders(folder: Path) -> None:
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for f in reversed(missing):
        try:
            f.mkdir(PRIVATE_FOLDER)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, left as it is
        os.chmod(f, PRIVATE_FOLDER)  # exactly 0700, whatever the umask


def _warn_if_exposed(path: Path) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077 and str(path) not in _warned:
        _warned.add(str(path))
        log.warning(
            "store_file_exposed",
            message=f"the SQLite store {path} is accessible by group or others (mode {mode:04o}): "
            f"chmod 600 {path} (and its -wal and -shm files)",
        )


def _sqlite_setup(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(begin)


@contextmanager
def connected_once(url: str) -> Iterator[Connection]:
    """One connection to the database, for the commands that check it
    before they act: StoreRefused or StoreUnavailable (service/store/errors.py)
    naming the cause and the fix if it cannot be had or used; any other
    database error as it is."""
    from sqlalchemy.exc import SQLAlchemyError

    from .errors import diagnose

    try:
        engine = make_engine(url, pool_size=1)
    except OSError as exc:  # a SQLite file that cannot be made
        raise diagnose(exc, url) or exc from None
    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        if (problem := diagnose(exc, url)) is not None:
            raise problem from None
        raise
    finally:
        engine.dispose()


def reach(url: str) -> None:
    """Connect once and run `SELECT 1` (connected_once)."""
    from sqlalchemy import text

    with connected_once(url) as conn:
        conn.execute(text("SELECT 1"))
