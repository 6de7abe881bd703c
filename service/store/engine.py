"""Engines for SQLite and PostgreSQL, set up for durability.

SQLite: WAL with synchronous=FULL (an acknowledged commit survives a crash
of the process or the machine); writers take the lock at BEGIN IMMEDIATE, so
two processes never deadlock on a lock upgrade. PostgreSQL: psycopg 3,
default synchronous_commit (on).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def make_engine(url: str, *, writer: bool = False, pool_size: int = 5) -> Engine:
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=4,
            hide_parameters=True,
        )
        _sqlite_setup(engine, begin="BEGIN IMMEDIATE" if writer else "BEGIN")
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=4,
        pool_pre_ping=True,
        hide_parameters=True,  # never log bound values (verifiers)
        # Fail fast when the database is gone instead of hanging a caller:
        # a short connect timeout, TCP keepalives, and a statement timeout.
        connect_args={
            "connect_timeout": 3,
            "application_name": "pinlife",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "options": "-c statement_timeout=10000 -c lock_timeout=10000",
        },
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
