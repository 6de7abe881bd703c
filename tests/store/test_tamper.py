"""Tamper evidence (DESIGN.md §3): with the append-only trigger switched off
by someone with power over the database, any in-place change of an event is
found by walking the hash chain, and named by card and version."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, text, update

from pinlife.domain.chain import legacy_hash, link_hash
from pinlife.store.tables import events
from tests.keys import INTEGRITY
from tests.store.helpers import CORRECT, RESIDENT, USER, WRONG, enroll, one_by_one, run_ok, verify


def disable_append_only(store) -> None:
    with store.writer.begin() as conn:
        if store.dialect == "postgresql":
            conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update_delete"))
        else:
            conn.execute(text("DROP TRIGGER events_no_update"))
            conn.execute(text("DROP TRIGGER events_no_delete"))


def tamper(store, card_id: str, version: int, **values) -> None:
    with store.writer.begin() as conn:
        n = conn.execute(
            update(events).where(events.c.stream_id == card_id, events.c.version == version).values(**values)
        ).rowcount
    assert n == 1


@pytest.fixture
def history(store, writer, clock):
    """card-b: enrolled, failed, failed, verified, failed; a and c untouched."""
    run_ok(writer, enroll("card-a"), enroll("card-b"), enroll("card-c"))
    clock.advance()
    one_by_one(
        writer,
        verify("card-b", USER, WRONG[USER]),
        verify("card-a", USER, CORRECT[USER]),
        verify("card-b", USER, WRONG[USER]),
        verify("card-c", RESIDENT, WRONG[RESIDENT]),
        verify("card-b", USER, CORRECT[USER]),
        verify("card-b", USER, WRONG[USER]),
        verify("card-c", RESIDENT, WRONG[RESIDENT]),
    )
    assert store.integrity.first_broken_link(INTEGRITY) is None
    disable_append_only(store)
    return {e.version: e for e in store.log.stream("card-b")}


def _changes(e):
    return {
        "payload": {"payload": {**e.payload, "consecutive_failures": 1, "remaining_tries": 2}},
        "occurred_at": {"occurred_at": e.occurred_at + timedelta(hours=-3)},
        "terminal_id": {"terminal_id": "terminal-forged"},
        "channel": {"channel": "kiosk"},
        "request_id": {"request_id": "req-forged-0001"},
        "event_type": {"event_type": "PinVerified", "payload": {}},
        "pin_type": {"pin_type": RESIDENT.value},
        "event_id": {"event_id": "00000000-0000-4000-8000-000000000000"},
        "schema_version": {"schema_version": 2},
        "hash": {"hash": "f" * 64},
        "prev_hash": {"prev_hash": "0" * 64},
    }


FIELDS = [
    "payload",
    "occurred_at",
    "terminal_id",
    "channel",
    "request_id",
    "event_type",
    "pin_type",
    "event_id",
    "schema_version",
    "hash",
    "prev_hash",
]


@pytest.mark.parametrize("field", FIELDS)
def test_an_event_changed_in_place_is_named(store, history, field):
    target = history[3]  # the second failure, in the middle of the stream
    assert target.event_type == "PinVerificationFailed" and target.payload["consecutive_failures"] == 2
    tamper(store, "card-b", 3, **_changes(target)[field])

    one = store.integrity.first_broken_link(INTEGRITY, "card-b")
    assert (one.stream_id, one.version, one.position) == ("card-b", 3, target.position)
    every = store.integrity.first_broken_link(INTEGRITY)
    assert (every.stream_id, every.version, every.position) == ("card-b", 3, target.position)
    assert store.integrity.first_broken_link(INTEGRITY, "card-a") is None
    assert store.integrity.first_broken_link(INTEGRITY, "card-c") is None


def test_a_rehashed_event_without_the_key_is_named(store, history):
    """Without the integrity key, a recomputed hash (unkeyed, or under a
    guessed key) never checks: the changed event itself is named."""
    target = history[3]
    forged = {**target.envelope(), "payload": {**target.payload, "consecutive_failures": 1, "remaining_tries": 2}}
    for forged_hash in (legacy_hash(target.prev_hash, forged), link_hash(b"x" * 32, target.prev_hash, target.position, forged)):
        tamper(store, "card-b", 3, payload=forged["payload"], hash=forged_hash)
        broken = store.integrity.first_broken_link(INTEGRITY, "card-b")
        assert (broken.stream_id, broken.version) == ("card-b", 3)
        assert store.integrity.first_broken_link(INTEGRITY) == broken


def test_with_the_key_a_rehashed_event_breaks_the_next_link(store, history):
    """Only someone holding the integrity key can relink an event; the next
    link still names the change."""
    target = history[3]
    forged = {**target.envelope(), "payload": {**target.payload, "consecutive_failures": 1, "remaining_tries": 2}}
    key = INTEGRITY.key(target.key_id)
    tamper(store, "card-b", 3, payload=forged["payload"], hash=link_hash(key, target.prev_hash, target.position, forged))
    broken = store.integrity.first_broken_link(INTEGRITY, "card-b")
    assert (broken.stream_id, broken.version) == ("card-b", 4)
    assert "previous" in broken.reason


def test_a_deleted_event_is_named(store, history):
    with store.writer.begin() as conn:
        conn.execute(delete(events).where(events.c.stream_id == "card-b", events.c.version == 2))
    broken = store.integrity.first_broken_link(INTEGRITY, "card-b")
    assert (broken.stream_id, broken.version, broken.position) == ("card-b", 3, history[3].position)
    assert store.integrity.first_broken_link(INTEGRITY, "card-a") is None


def test_the_whole_store_check_names_the_earliest_break(store, history):
    late_c = store.log.stream("card-c")[-1]
    tamper(store, "card-c", late_c.version, terminal_id="terminal-forged")
    tamper(store, "card-b", 4, occurred_at=history[4].occurred_at + timedelta(seconds=1))
    assert late_c.position > history[4].position
    broken = store.integrity.first_broken_link(INTEGRITY)
    assert (broken.stream_id, broken.version, broken.position) == ("card-b", 4, history[4].position)
    assert store.integrity.first_broken_link(INTEGRITY, "card-c").version == late_c.version
    assert store.integrity.first_broken_link(INTEGRITY, "card-a") is None


def test_a_deleted_last_event_is_named(store, history):
    last = history[max(history)]
    with store.writer.begin() as conn:
        conn.execute(delete(events).where(events.c.stream_id == "card-b", events.c.version == last.version))
    broken = store.integrity.first_broken_link(INTEGRITY, "card-b")
    assert broken is not None and broken.stream_id == "card-b"
    assert store.integrity.first_broken_link(INTEGRITY) is not None
