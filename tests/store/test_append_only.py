"""The database itself refuses to change or remove events (DESIGN.md §3)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pinlife.app.batch import ThreadRunner
from pinlife.store.event_store import EventStore
from tests.keys import INTEGRITY
from tests.store.helpers import CORRECT, USER, WRONG, dump, enroll, run_ok, verify

REFUSED = [
    "UPDATE events SET channel = 'forged' WHERE position = 2",
    "UPDATE events SET payload = payload",  # every row, even a no-op change
    "DELETE FROM events WHERE position = 3",
    "DELETE FROM events",
]


@pytest.fixture
def filled(store, writer):
    run_ok(writer, enroll("card-a"), enroll("card-b"))
    run_ok(writer, verify("card-a", USER, WRONG[USER]), verify("card-b", USER, CORRECT[USER]))
    before = dump(store.writer, "events")
    assert len(before) == 4
    return before


def _refused(store, sql: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as info:
        with store.writer.begin() as conn:
            conn.execute(text(sql))
    # the refusal comes from the append-only trigger, not from a typo
    assert "append-only" in str(info.value)
    return info.value


@pytest.mark.parametrize("sql", REFUSED)
def test_update_and_delete_are_refused(store, filled, sql):
    _refused(store, sql)
    assert dump(store.writer, "events") == filled
    assert store.integrity.first_broken_link(INTEGRITY) is None


def test_refused_inside_autocommit_too(store, filled):
    """No transaction-level trick: a bare statement outside BEGIN is refused."""
    with pytest.raises(DBAPIError, match="append-only"):
        with store.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("DELETE FROM events WHERE position = 1"))
    assert dump(store.writer, "events") == filled


@pytest.mark.postgres
def test_truncate_is_refused_on_postgres(databases, keys, clock):
    # SQLite has no TRUNCATE (its DELETE FROM events is tested above)
    pg = EventStore(databases.create("postgres"))
    try:
        w = ThreadRunner(pg, keys, clock)
        run_ok(w, enroll("card-a"), verify("card-a", USER, WRONG[USER]))
        before = dump(pg.writer, "events")
        _refused(pg, "TRUNCATE events")
        _refused(pg, "TRUNCATE events CASCADE")
        assert dump(pg.writer, "events") == before
    finally:
        pg.close()


def test_appending_still_works_after_a_refusal(store, writer, filled):
    _refused(store, "DELETE FROM events")
    run_ok(writer, verify("card-b", USER, WRONG[USER]))
    assert store.log.head_position() == 5
    assert [e.position for e in store.log.all_events()] == [1, 2, 3, 4, 5]
