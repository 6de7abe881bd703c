"""The write path's driver-level statements (service/store/hot_sql.py) must
cover every column of their tables and store values exactly as SQLAlchemy
Core does, so the Core reads (streams, audit, rebuild) see the same data."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import psycopg.sql
import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import HANDLERS, Deps
from pinlife.domain import throttle
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.store import hot_sql
from pinlife.store.errors import WriteConflict, is_retryable, is_unavailable
from pinlife.store.event_store import EventStore
from pinlife.store.hot_sql import Statement
from pinlife.store.records import utc
from pinlife.store.tables import cards, events, pin_states, requests, secrets, terminals
from tests.store.helpers import CORRECT, COUNTER, USER, WRONG, enroll, run_ok, verify

POLICY = ThrottlePolicy()


@pytest.mark.parametrize(
    "columns, table",
    [
        (hot_sql.CARD_COLUMNS, cards),
        (hot_sql.EVENT_COLUMNS, events),
        (hot_sql.PIN_COLUMNS, pin_states),
        (hot_sql.SECRET_COLUMNS, secrets),
        (hot_sql.REQUEST_COLUMNS, requests),
        (hot_sql.TERMINAL_COLUMNS, terminals),
    ],
)
def test_row_layouts_name_every_column_of_their_table_once(columns, table):
    assert sorted(columns) == sorted(c.name for c in table.columns)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"])
def test_statements_use_the_dialects_placeholder_only(dialect):
    sql = hot_sql.HotSql(dialect)
    mark, other = ("%s", "?") if dialect.name == "postgresql" else ("?", "%s")
    for text in (
        sql.insert_cards,
        sql.update_cards,
        sql.take_positions,
        sql.insert_events,
        sql.upsert_pins,
        sql.upsert_secrets,
        sql.insert_requests,
        sql.locked_heads(["a", "b"]).sql,
        sql.read_cards(["a", "b"]).sql,
        sql.terminals(["a"], lock=True).sql,
        sql.insert_terminals(["a"], "x", ["m"]).sql,
    ):
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
    stream = store.log.stream("card-hot")
    assert [e.occurred_at for e in stream] == [clock.now] * 3
    assert [e.payload.get("consecutive_failures") for e in stream[1:]] == [1, 2]
    with store.reader.connect() as conn:
        enrolled_at = conn.execute(select(cards.c.enrolled_at).where(cards.c.card_id == "card-hot")).scalar_one()
        outcomes = conn.execute(select(requests.c.outcome).where(requests.c.card_id == "card-hot")).scalars().all()
    assert utc(enrolled_at) == clock.now
    assert len(outcomes) == 3 and all(isinstance(o, dict) and o for o in outcomes)
    clock.advance(seconds=1)
    run_ok(writer, verify("card-hot", USER, WRONG[USER]))  # the third failure locks
    assert store.cards.read_card("card-hot").pins[USER].locked_at == clock.now


def test_a_round_trip_runs_its_statements_in_order_and_returns_each_ones_rows(store):
    """HotSql.run: a read sees the writes queued before it (PostgreSQL sends
    them all in one pipeline), and each statement's rows come back by name."""
    sql = store._hot_sql
    with store.writer.begin() as conn:
        rows = sql.run(
            conn,
            {
                "new": sql.insert_terminals(["term-b", "term-a"], "genesis", ["mac-b", "mac-a"]),
                "again": sql.insert_terminals(["term-a"], "other", ["other"]),  # already there: left as it is
                "locked": sql.terminals(["term-a", "term-b", "term-c"], lock=True),
            },
        )
    assert rows["new"] == [] and rows["again"] == []
    assert [tuple(r) for r in rows["locked"]] == [
        ("term-a", 0, "genesis", None, None, 0, None, "mac-a"),
        ("term-b", 0, "genesis", None, None, 0, None, "mac-b"),
    ]


def test_a_failing_statement_in_a_round_trip_raises_as_sqlalchemy_would_and_writes_nothing(db_url, keys):
    store = EventStore(db_url)
    sql = store._hot_sql
    try:
        with pytest.raises(IntegrityError) as err:
            with store.writer.begin() as conn:
                sql.run(
                    conn,
                    {
                        "new": sql.insert_terminals(["term-a"], "genesis", ["mac"]),
                        "twice": Statement(
                            sql.insert_requests,
                            [("t", "r", "c", "verify", "fp", "{}", 1, utc(datetime.now(UTC)), None)] * 2,
                            many=True,
                        ),
                    },
                )
        assert is_retryable(err.value)
        with store.reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM terminals").scalar_one() == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_a_connection_lost_in_a_round_trip_is_the_store_unavailable_and_the_next_batch_reconnects(databases, keys, clock):
    store = EventStore(databases.create("postgres"))
    sql, writer = store._hot_sql, ThreadRunner(store, keys, clock)
    try:
        raised = []
        with pytest.raises(DBAPIError):  # rolling back on the lost connection fails too
            with store.writer.begin() as conn:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                with store.reader.connect() as other:
                    other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
                try:
                    sql.run(conn, {"locked": sql.terminals(["term-a"], lock=True)})
                except Exception as exc:
                    raised.append(exc)
                    raise
        assert isinstance(raised[0], DBAPIError) and is_unavailable(raised[0])
        run_ok(writer, enroll("card-after"))
        assert store.cards.read_card("card-after").enrolled
    finally:
        store.close()


# -- terminals read unlocked, written only as read (service/store/unit_of_work.py) --


@pytest.mark.postgres
@pytest.mark.parametrize("row_first", [True, False], ids=["row-updated", "row-made"])
def test_a_terminal_written_by_another_transaction_since_it_was_read_fails_the_batch_as_retryable(
    databases, keys, clock, row_first
):
    """Another instance records a failure for the terminal (updating its row,
    or making it) between this transaction's unlocked read and its write:
    the write does not happen, and the batch's retry (lock_terminals) writes
    on the row as it now is."""
    store = EventStore(databases.create("postgres"))
    writer = ThreadRunner(store, keys, clock)
    terminal = COUNTER.terminal_id
    try:
        run_ok(writer, enroll("card-1"), enroll("card-2"), enroll("card-3"))
        if row_first:
            run_ok(writer, verify("card-3", USER, WRONG[USER]))
        raised = []
        with pytest.raises((WriteConflict, IntegrityError)):
            with store.unit_of_work(keys.integrity) as uow:
                window = uow.terminal_window(terminal)
                run_ok(writer, verify("card-2", USER, WRONG[USER]))  # commits meanwhile: nothing here is locked
                uow.set_terminal_window(terminal, throttle.record_failure(window, "card-1", clock(), POLICY)[0])
                try:
                    uow.flush()
                except Exception as exc:
                    raised.append(exc)
                    raise
        assert is_retryable(raised[0])
        assert isinstance(raised[0], WriteConflict if row_first else IntegrityError)
        with store.unit_of_work(keys.integrity, lock_terminals=True) as uow:
            window = uow.terminal_window(terminal)
            uow.set_terminal_window(terminal, throttle.record_failure(window, "card-1", clock(), POLICY)[0])
        with store.unit_of_work(keys.integrity) as uow:
            assert set(uow.terminal_window(terminal).last_failure) == {"card-1", "card-2"} | ({"card-3"} if row_first else set())
    finally:
        store.close()


@pytest.mark.postgres
def test_a_check_that_read_a_terminal_before_another_instance_throttled_it_is_retried_after(databases, keys, clock):
    """A passing check writes nothing to its terminal, yet its events must not
    follow (in log order) a concurrent change of the terminal it did not see:
    its batch fails WriteConflict, and the retry sees the terminal as it is."""
    store = EventStore(databases.create("postgres"))
    writer = ThreadRunner(store, keys, clock)
    try:
        run_ok(writer, enroll("card-1"), enroll("card-2"))
        run_ok(writer, verify("card-2", USER, WRONG[USER]))  # the terminal has a row
        with pytest.raises(WriteConflict):
            with store.unit_of_work(keys.integrity) as uow:
                cmd = verify("card-1", USER, CORRECT[USER])
                answer = HANDLERS[type(cmd)].handle(uow, cmd, COUNTER, Deps(keys, Policy(), clock()))
                assert answer.outcome.result.name == "OK"
                run_ok(writer, verify("card-2", USER, WRONG[USER]))  # another instance changes the window meanwhile
        assert [e.event_type for e in store.log.stream("card-1")] == ["CardEnrolled"]  # nothing written
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["terminals", "requests", "heads", "pins", "status"])
def test_a_lookup_prepared_while_its_table_was_empty_still_probes_the_index(databases, name):
    """psycopg prepares a statement at its fifth run, and PostgreSQL may keep
    one generic plan for it: on a new store (or without autovacuum's ANALYZE)
    that plan is made while the table is empty, and a scan of the whole
    table would then run on every batch for the connection's life, slower
    as the table grows. The writer's connections plan without sequential
    scans (service/store/engine.py), so the generic plan probes the index."""
    store = EventStore(databases.create("postgres"))
    sql = store._hot_sql
    statement = {
        "terminals": sql.terminals(["t-1", "t-2"], lock=False),
        "requests": sql.requests_among(["t-1"], ["r-1", "r-2"]),
        "heads": sql.locked_heads(["card-1", "card-2"]),
        "pins": sql.pins_with_verifiers(["card-1", "card-2"]),
        "status": sql.read_cards(["card-1", "card-2"]),
    }[name]
    text_ = statement.sql
    for n in range(1, len(statement.params) + 1):
        text_ = text_.replace("%s", f"${n}", 1)
    try:
        with store.writer.connect() as conn:
            pg = conn.connection.driver_connection
            pg.execute("SET plan_cache_mode = force_generic_plan")  # the plan a prepared statement may keep
            pg.execute(f"PREPARE q AS {text_}")
            args = ", ".join(psycopg.sql.Literal(v).as_string(pg) for v in statement.params)
            plan = "\n".join(r[0] for r in pg.execute(f"EXPLAIN EXECUTE q({args})"))
            pg.execute("DEALLOCATE q")
            pg.execute("RESET plan_cache_mode")
            conn.rollback()
    finally:
        store.close()
    assert "Seq Scan" not in plan and "Index" in plan, plan


def test_on_sqlite_a_batch_holds_the_write_lock_from_its_first_read(databases, keys):
    """Why a batch on SQLite claims its terminals without re-checking them
    (UnitOfWork._claim): nothing can be written between its prefetch and its
    commit, by this process or another."""
    url = databases.create("sqlite")
    first, second = EventStore(url), EventStore(url)
    try:
        with first.unit_of_work(keys.integrity) as uow:
            uow.prefetch(["card-1"], terminal_ids=["t-1"])
            with second.writer.connect() as conn:
                conn.connection.driver_connection.execute("PRAGMA busy_timeout = 50")
                with pytest.raises(DBAPIError, match="database is locked"):
                    conn.exec_driver_sql("INSERT INTO terminals (terminal_id, version, last_hash) VALUES ('t-1', 0, 'x')")
    finally:
        first.close()
        second.close()


def test_answers_kept_before_they_had_macs_are_sealed_by_migrate_and_replayed(store, writer, keys):
    """Rows from before migration 0008 have no MAC: not replayed (an
    integrity error) until `pinlife migrate` seals them (rechain.seal_answers);
    then a retry gets its kept answer."""
    from pinlife.app.ports import IntegrityViolation
    from pinlife.store.rechain import seal_answers, unsealed_answers

    run_ok(writer, enroll("card-1"))
    first = verify("card-1", USER, WRONG[USER])
    run_ok(writer, first)
    with store.writer.begin() as conn:
        conn.execute(requests.update().values(mac=None))  # as kept before 0008
    assert unsealed_answers(store)
    (refused,) = writer.process([(first, COUNTER)])
    assert isinstance(refused, IntegrityViolation) and "does not match its MAC" in str(refused)

    assert seal_answers(store, keys.integrity) == 2  # the enrolment's and the verify's
    assert not unsealed_answers(store)
    (retry,) = run_ok(writer, first)
    assert retry.replayed


def test_a_time_of_another_zone_is_stored_as_its_utc_instant(store):
    """SQLite keeps a time's wall clock and drops its offset (what is read
    back is taken as UTC): the column type converts an aware time to UTC
    first, for the write path's binds and for Core alike."""
    from datetime import timedelta, timezone

    tokyo = datetime(2026, 12, 1, 19, 30, tzinfo=timezone(timedelta(hours=9)))
    same = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    sql = hot_sql.HotSql(store.writer.dialect)
    assert sql.bind_time(tokyo) == sql.bind_time(same)
    with store.writer.begin() as conn:
        conn.execute(cards.insert().values(card_id="card-tz", version=0, last_hash="0" * 64, status="active", enrolled_at=tokyo))
    with store.writer.connect() as conn:
        (stored,) = conn.execute(select(cards.c.enrolled_at).where(cards.c.card_id == "card-tz")).one()
    assert utc(stored) == same
