"""Helpers for the store-layer tests: commands with fresh request ids, a
settable clock, and raw dumps of the tables.

Imported as ``tests.store.helpers`` so it cannot clash with another test
directory's helpers module.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, text

from pinlife.app.answers import Answer
from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.domain.commands import CardCommand, ChangePin, EnrollCard, VerifyPin
from pinlife.domain.pins import PinType
from tests.keys import INTEGRITY

RESIDENT = PinType.RESIDENT_REGISTRY
CARD_INFO = PinType.CARD_INFO_INPUT_SUPPORT
USER = PinType.USER_CERTIFICATE
SIGNATURE = PinType.SIGNATURE
ALL_TYPES = (RESIDENT, CARD_INFO, USER, SIGNATURE)

CORRECT = {RESIDENT: "1234", CARD_INFO: "2345", USER: "3456", SIGNATURE: "ABC123"}
WRONG = {RESIDENT: "9999", CARD_INFO: "9999", USER: "9999", SIGNATURE: "ZZZ999"}

COUNTER = Caller("counter", "terminal-counter-01")
KIOSK = Caller("kiosk", "terminal-kiosk-07")

TABLES = ("cards", "events", "log_head", "pin_states", "secrets", "requests")


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def enroll(card_id: str, pins: dict[PinType, str] | None = None, request_id: str | None = None) -> EnrollCard:
    return EnrollCard.create(request_id or rid(), card_id, list((pins or CORRECT).items()))


def verify(card_id: str, pin_type: PinType, pin: str, request_id: str | None = None) -> VerifyPin:
    return VerifyPin.create(request_id or rid(), card_id, pin_type, pin)


def change(card_id: str, pin_type: PinType, current: str, new: str, request_id: str | None = None) -> ChangePin:
    return ChangePin.create(request_id or rid(), card_id, pin_type, current, new)


def run(writer: ThreadRunner, *commands: CardCommand, caller: Caller = COUNTER) -> list[Answer | BaseException]:
    """One process() call: all the commands in one batch."""
    return writer.process([(c, caller) for c in commands])


def run_ok(writer: ThreadRunner, *commands: CardCommand, caller: Caller = COUNTER) -> list[Answer]:
    results = run(writer, *commands, caller=caller)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results  # type: ignore[return-value]


def one_by_one(writer: ThreadRunner, *commands: CardCommand, caller: Caller = COUNTER) -> list[Answer | BaseException]:
    """Each command in its own process() call (its own transaction)."""
    return [writer.process([(c, caller)])[0] for c in commands]


def dump(engine: Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def event_types(events: Sequence) -> list[str]:
    return [e.event_type for e in events]


def type_counts(events: Sequence) -> Counter:
    return Counter(e.event_type for e in events)


def assert_consistent(store) -> None:
    """Projection == rebuild, chain intact, positions 1..head, card heads right."""
    assert store.cards.projection() == store.cards.rebuild()
    assert store.integrity.first_broken_link(INTEGRITY) is None
    log = list(store.log.all_events())
    assert [e.position for e in log] == list(range(1, store.log.head_position() + 1))
    heads = {r["card_id"]: r for r in dump(store.writer, "cards")}
    last: dict[str, object] = {}
    for e in log:
        last[e.stream_id] = e
    assert heads.keys() == last.keys()
    for card_id, e in last.items():
        assert (heads[card_id]["version"], heads[card_id]["last_hash"]) == (e.version, e.hash)
    # the columns of pin_states that the projection does not read back
    for r in dump(store.writer, "pin_states"):
        pin = store.cards.projection()[r["card_id"]].pins[PinType(r["pin_type"])]
        assert r["status"] == ("locked" if pin.locked else "active")
        assert r["remaining_tries"] == pin.remaining_tries


def occurrences(store, card_id: str, event_type: str) -> int:
    """How many times an aggregated event happened on a card (service/domain/repeats.py):
    its events, the repeats they carry, and the repeats still pending in the terminals' rows."""
    from pinlife.domain import repeats
    from pinlife.store.tables import terminals

    recorded = [e for e in store.log.stream(card_id) if e.event_type == event_type]
    with store.reader.begin() as conn:
        rows = conn.execute(terminals.select().where(terminals.c.repeats.isnot(None))).all()
    pending = sum(
        p.repeats
        for row in rows
        for key, p in repeats.from_json(row.repeats).items()
        if repeats.Key.decode(key)[:2] == (event_type, card_id)
    )
    return len(recorded) + sum(e.payload["repeated"] for e in recorded) + pending
