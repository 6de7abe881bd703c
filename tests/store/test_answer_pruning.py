"""EventStore.prune_answers on each store: kept answers given before the
cutoff (an instant, in any time zone) are deleted, the rest kept and still
replayed; the log is untouched. Moved from tests/e2e/test_replay_window.py,
which made the answers through a server: here the writer makes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from pinlife.store.tables import requests
from tests.keys import INTEGRITY
from tests.store.helpers import CORRECT, USER, WRONG, enroll, rid, run_ok, verify

START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
TOKYO = timezone(timedelta(hours=9))


def kept(store) -> set[str]:
    with store.reader.begin() as conn:
        return {r.request_id for r in conn.execute(select(requests.c.request_id))}


def test_prune_answers_deletes_those_older_than_the_cutoff_and_keeps_the_rest(store, writer, clock):
    clock.now = START
    run_ok(writer, enroll("card-P1", request_id="enroll-P1"))  # kept at START
    old = rid()
    run_ok(writer, verify("card-P1", USER, CORRECT[USER], old))  # kept at START
    clock.advance(hours=2)
    new = rid()
    (new_answer,) = run_ok(writer, verify("card-P1", USER, WRONG[USER], new))  # kept at START + 2 h
    assert kept(store) == {"enroll-P1", old, new}
    length = store.log.head_position()

    assert store.prune_answers(START) == 0  # strictly older than the cutoff
    assert kept(store) == {"enroll-P1", old, new}
    assert store.prune_answers(START + timedelta(hours=1)) == 2
    assert kept(store) == {new}
    assert store.prune_answers(START + timedelta(hours=1)) == 0
    assert kept(store) == {new}
    # The kept answer is still replayed; pruning appended nothing.
    (again,) = run_ok(writer, verify("card-P1", USER, WRONG[USER], new))
    assert again.replayed and again.outcome == new_answer.outcome
    assert store.log.head_position() == length
    assert store.integrity.first_broken_link(INTEGRITY) is None


def test_prune_answers_takes_a_cutoff_in_any_time_zone(store, writer, clock):
    """The cutoff is an instant: given in Tokyo time, it prunes exactly what
    the same instant in UTC prunes."""
    clock.now = START
    run_ok(writer, enroll("card-P2", request_id="enroll-P2"))  # kept at START (10:00 Tokyo)
    clock.advance(hours=2)
    later = rid()
    run_ok(writer, verify("card-P2", USER, CORRECT[USER], later))  # kept at START + 2 h (12:00 Tokyo)
    cutoff = (START + timedelta(hours=1)).astimezone(TOKYO)  # 11:00 Tokyo
    assert store.prune_answers(cutoff) == 1
    assert kept(store) == {later}
