"""The whole-store check reads the log in ranges, so that no statement
outlasts the statement timeout on a store of millions of cards: positions are
counted POSITION_RANGE at a time, and the streams no card head names (a
deleted card's, a terminal's) are found range by range beside the card
batches. With tiny ranges the verdicts are the ones of a single range."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete

from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.store import check
from pinlife.store.check import check_store
from pinlife.store.tables import cards, events, pin_states, secrets, terminals
from tests.store.helpers import USER, WRONG, enroll, one_by_one, run_ok, verify
from tests.store.test_tamper import disable_append_only

READER = Caller("medical_reader", "reader-ranges")
THROTTLE = ThrottlePolicy(max_distinct_cards=2, window=timedelta(minutes=10), penalty=timedelta(minutes=15))
CARDS = [f"card-{i}" for i in range(7)]


@pytest.fixture
def filled(store, keys, clock):
    """Seven cards, wrong tries from one reader until it is throttled (its
    terminal stream), 20-odd events in all."""
    writer = ThreadRunner(store, keys, clock, Policy(throttle=THROTTLE))
    run_ok(writer, *(enroll(c) for c in CARDS))
    one_by_one(writer, *(verify(c, USER, WRONG[USER]) for c in CARDS[:4]), caller=READER)
    assert check_store(store, keys).intact
    return store


def _verdict(store, keys, monkeypatch, **small):
    for name, value in small.items():
        monkeypatch.setattr(check, name, value)
    return check_store(store, keys).first_broken_link


def test_each_missing_position_is_named_alike_in_small_ranges_and_in_one(filled, keys, monkeypatch):
    store = filled
    head = store.log.head_position()
    disable_append_only(store)
    for gone in (1, 2, 3, head // 2, head - 1, head):
        with store.writer.begin() as conn:
            row = conn.execute(events.select().where(events.c.position == gone)).one()._mapping
            conn.execute(delete(events).where(events.c.position == gone))
        whole = _verdict(store, keys, monkeypatch, POSITION_RANGE=1_000_000)
        with store.snapshot() as view:
            count, gap = check._positions(view, head)
        assert count == head - 1 and (gap.position, gap.reason) == (gone, f"position {gone} is missing from the log")
        for size in (1, 2, 3):
            monkeypatch.setattr(check, "POSITION_RANGE", size)
            with store.snapshot() as view:
                assert check._positions(view, head) == (count, gap), (gone, size)
            assert _verdict(store, keys, monkeypatch) == whole, (gone, size)
        with store.writer.begin() as conn:
            conn.execute(events.insert().values(**row))
        assert check_store(store, keys).intact


def _named_alike_in_small_ranges(store, keys, monkeypatch, stream_id: str) -> None:
    """The check names `stream_id` first, with the default ranges and with
    batches of 2 and 3 cards and pages of 1 and 2 stream ids."""
    whole = _verdict(store, keys, monkeypatch)
    assert whole.stream_id == stream_id
    for batch, ids in ((2, 1), (3, 2)):
        assert _verdict(store, keys, monkeypatch, BATCH=batch, STREAM_IDS=ids) == whole, (batch, ids)


def _delete_head(store, card_id: str) -> None:
    """As the database-level attacker: the card's head, PIN states and verifiers gone, its events left."""
    with store.writer.begin() as conn:
        for table in (pin_states, secrets, cards):
            conn.execute(delete(table).where(table.c.card_id == card_id))


def test_a_card_stream_whose_head_row_is_gone_is_named(filled, keys, monkeypatch):
    _delete_head(filled, CARDS[3])  # among the others: found in the range of its batch
    _named_alike_in_small_ranges(filled, keys, monkeypatch, CARDS[3])


def test_a_terminal_stream_whose_row_is_gone_is_named(filled, keys, monkeypatch):
    with filled.writer.begin() as conn:
        conn.execute(delete(terminals).where(terminals.c.terminal_id == READER.terminal_id))
    _named_alike_in_small_ranges(filled, keys, monkeypatch, f"terminal:{READER.terminal_id}")


def test_a_card_stream_past_the_last_head_is_named(filled, keys, monkeypatch):
    _delete_head(filled, CARDS[-1])  # no head after it: found in the pages of stream ids past the last card
    _named_alike_in_small_ranges(filled, keys, monkeypatch, CARDS[-1])
