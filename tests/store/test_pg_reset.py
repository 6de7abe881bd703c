"""The suite's PostgreSQL databases are reused only as their template was
(tests/pg_reset.py): rows gone, the log head and the revision as made, the
planner's statistics forgotten; a database whose schema, triggers or
privileges a test changed is dropped, never handed to another test."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.conftest import _pg_url
from tests.pg_reset import Template, reset

pytestmark = pytest.mark.postgres


@pytest.fixture
def template_state(pg_template) -> Template:
    return Template.read(_pg_url(pg_template))


@pytest.fixture
def copy(pg_admin, pg_template):
    name = f"pinlife_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield name
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run(name: str, *statements: str) -> list:
    engine = create_engine(_pg_url(name), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            out = [
                conn.execute(text(s)).all() if s.lstrip().upper().startswith("SELECT") else conn.execute(text(s))
                for s in statements
            ]
            return [o for o in out if isinstance(o, list)]
    finally:
        engine.dispose()


def test_a_database_with_rows_and_statistics_is_reset_to_the_template(pg_admin, copy, template_state):
    log_head_before = _run(copy, "SELECT * FROM log_head")[0]
    _run(
        copy,
        "INSERT INTO tree_nodes (level, idx, hash) SELECT 0, g, sha256(g::text::bytea) FROM generate_series(1, 50) g",
        "UPDATE log_head SET position = position + 7",
        "ANALYZE tree_nodes",
    )
    assert _run(copy, "SELECT count(*) FROM pg_statistic WHERE starelid = 'tree_nodes'::regclass")[0][0][0] > 0
    lingering = create_engine(_pg_url(copy), poolclass=NullPool).connect()  # a client still connected: ended

    with pg_admin.connect() as conn:
        assert reset(conn, _pg_url(copy), copy, template_state)

    counts, head, stats = _run(
        copy,
        "SELECT count(*) FROM tree_nodes",
        "SELECT * FROM log_head",
        "SELECT count(*) FROM pg_statistic WHERE starelid = 'tree_nodes'::regclass",
    )
    assert counts[0][0] == 0 and head == log_head_before and stats[0][0] == 0
    with pytest.raises(OperationalError):  # its server process was ended
        lingering.execute(text("SELECT 1"))
    assert Template.read(_pg_url(copy)) == template_state


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE events DISABLE TRIGGER events_no_truncate",
        "CREATE TABLE scratch (x int)",
        "CREATE INDEX ix_scratch ON terminals (terminal_id DESC)",
        "GRANT SELECT ON events TO PUBLIC",
        "UPDATE alembic_version SET version_num = 'elsewhere'",
        "ALTER TABLE pin_states SET (fillfactor = 50)",
    ],
)
def test_a_database_whose_schema_changed_is_not_reset(pg_admin, copy, template_state, change):
    _run(copy, "INSERT INTO tree_nodes (level, idx, hash) VALUES (0, 1, sha256('x'))", change)
    with pg_admin.connect() as conn:
        assert not reset(conn, _pg_url(copy), copy, template_state)
    assert _run(copy, "SELECT count(*) FROM tree_nodes")[0][0][0] == 1  # left as it was, for the caller to drop
