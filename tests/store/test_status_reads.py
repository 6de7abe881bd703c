"""Status reads (GetPinStatus) answered inside a writer batch
(`ReadCard`): the same state as a read of the tables, ordered with the
commands of their batch, and nothing recorded — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from pinlife.app.handlers import ReadCard
from pinlife.domain.pins import retry_limit
from tests.store.helpers import (
    CORRECT,
    KIOSK,
    SIGNATURE,
    TABLES,
    USER,
    WRONG,
    count,
    enroll,
    run,
    run_ok,
    verify,
)


def test_a_read_in_a_batch_is_the_state_the_tables_hold(store, writer):
    run_ok(writer, enroll("card-s1"), enroll("card-s2"))
    run_ok(writer, verify("card-s1", USER, WRONG[USER]))
    run_ok(writer, *[verify("card-s2", SIGNATURE, WRONG[SIGNATURE]) for _ in range(retry_limit(SIGNATURE))])
    s1, s2, unknown = run(writer, ReadCard("card-s1"), ReadCard("card-s2"), ReadCard("card-none"))
    assert s1.state == store.cards.read_card("card-s1") and s1.state.pin(USER).consecutive_failures == 1
    assert s2.state == store.cards.read_card("card-s2") and s2.state.pin(SIGNATURE).locked
    assert unknown is None and store.cards.read_card("card-none") is None
    # the way out of a lock is part of the read, decided at the batch's instant; none for an open PIN
    assert [v.pin.pin_type for v in s2.pins if v.recovery is not None] == [SIGNATURE]


def test_a_read_sees_the_commands_before_it_in_its_batch_and_not_those_after(store, writer):
    run_ok(writer, enroll("card-s3"))
    before, _, between, _, after = run(
        writer,
        ReadCard("card-s3"),
        verify("card-s3", USER, WRONG[USER]),
        ReadCard("card-s3"),
        verify("card-s3", USER, WRONG[USER]),
        ReadCard("card-s3"),
    )
    assert [s.state.pin(USER).consecutive_failures for s in (before, between, after)] == [0, 1, 2]
    assert [s.state.version for s in (before, between, after)] == [1, 2, 3]
    assert after.state == store.cards.read_card("card-s3")


def test_a_card_enrolled_earlier_in_the_batch_is_read(store, writer):
    missing, enrolled, read = run(writer, ReadCard("card-s4"), enroll("card-s4"), ReadCard("card-s4"))
    assert missing is None
    assert read.state.version == enrolled.stream_version == 1 and set(read.state.pins) == set(CORRECT)


def test_reads_record_nothing(store, writer):
    run_ok(writer, enroll("card-s5"))
    before = {t: count(store.writer, t) for t in TABLES}
    results = run(writer, *[ReadCard("card-s5") for _ in range(5)], ReadCard("card-none"), caller=KIOSK)
    assert all(r is None or r.state.version == 1 for r in results)
    assert {t: count(store.writer, t) for t in TABLES} == before


def test_a_read_takes_no_lock_that_makes_a_writer_wait(store, writer):
    """PostgreSQL: while another transaction holds a card's head row (as a
    writer batch of another instance does), a status read of that card is
    answered from the last committed state instead of waiting for it. (On
    SQLite a batch holds the database's one write lock in any case.)"""
    if store.dialect != "postgresql":
        pytest.skip("SQLite batches serialise on the database's write lock")
    run_ok(writer, enroll("card-s6"))
    with store.writer.connect() as other:
        with other.begin():
            other.execute(text("SELECT version FROM cards WHERE card_id = 'card-s6' FOR UPDATE"))
            result: list = []
            reader = threading.Thread(target=lambda: result.extend(run(writer, ReadCard("card-s6"))))
            reader.start()
            reader.join(timeout=5)  # a lock wait would last until lock_timeout (10 s)
            assert not reader.is_alive(), "the status read waited for a row lock"
    assert result[0].state.version == 1
