"""The write path's driver-level statements (service/store/hot_sql.py) must
cover every column of their tables and store values exactly as SQLAlchemy
Core does, so the Core reads (streams, audit, rebuild) see the same data."""

from __future__ import annotations

from datetime import datetime, UTC

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from service.store import hot_sql
from service.store.records import utc
from service.store.tables import cards, events, pin_states, requests, secrets
from tests.store.helpers import USER, WRONG, enroll, run_ok, verify


@pytest.mark.parametrize(
    "columns, table",
    [
        (hot_sql.CARD_COLUMNS, cards),
        (hot_sql.EVENT_COLUMNS, events),
        (hot_sql.PIN_COLUMNS, pin_states),
        (hot_sql.SECRET_COLUMNS, secrets),
        (hot_sql.REQUEST_COLUMNS, requests),
    ],
)
def test_row_layouts_name_every_column_of_their_table_once(columns, table):
    assert sorted(columns) == sorted(c.name for c in table.columns)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"])
def test_statements_use_the_dialects_placeholder_only(dialect):
    sql = hot_sql.HotSql(dialect)
    mark, other = ("%s", "?") if dialect.name == "postgresql" else ("?", "%s")
    for text in (sql.insert_cards, sql.update_cards, sql.take_positions, sql.insert_events, sql.upsert_pins,
                 sql.upsert_secrets, sql.insert_requests, sql.heads(["a", "b"], lock=True)[0],
                 sql.heads(["a", "b"], lock=False)[0]):  # fmt: skip
        assert mark in text and other not in text


def test_sqlite_in_list_has_one_placeholder_per_value_and_pg_one_array():
    lite = hot_sql.HotSql(sqlite.dialect())
    pg = hot_sql.HotSql(postgresql.psycopg.dialect())
    assert lite.among("card_id", ["a", "b", "c"]) == ("card_id IN (?, ?, ?)", ("a", "b", "c"))
    assert pg.among("card_id", ["a", "b", "c"]) == ("card_id = ANY(%s)", (["a", "b", "c"],))


def test_values_written_by_the_hot_path_read_back_through_core(store, writer, clock):
    """Times (with microseconds), JSON payloads and answers written by the
    driver-level path come back unchanged through Core reads."""
    clock.now = datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=UTC)
    run_ok(writer, enroll("card-hot"))
    run_ok(writer, verify("card-hot", USER, WRONG[USER]), verify("card-hot", USER, WRONG[USER]))
    stream = store.stream("card-hot")
    assert [e.occurred_at for e in stream] == [clock.now] * 3
    assert [e.payload.get("consecutive_failures") for e in stream[1:]] == [1, 2]
    with store.reader.connect() as conn:
        enrolled_at = conn.execute(select(cards.c.enrolled_at).where(cards.c.card_id == "card-hot")).scalar_one()
        outcomes = conn.execute(select(requests.c.outcome).where(requests.c.card_id == "card-hot")).scalars().all()
    assert utc(enrolled_at) == clock.now
    assert len(outcomes) == 3 and all(isinstance(o, dict) and o for o in outcomes)
    clock.advance(seconds=1)
    run_ok(writer, verify("card-hot", USER, WRONG[USER]))  # the third failure locks
    assert store.read_card("card-hot").pins[USER].locked_at == clock.now
