"""The event store driven through the group-commit writer: positions and
versions, the stored envelope, the hash chain, projection == rebuild, paging
the log, idempotent retries and per-item failure in a batch."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from pinlife.app.answers import Answer
from pinlife.app.batch import ThreadRunner
from pinlife.app.ports import IntegrityViolation
from pinlife.domain.chain import GENESIS_HASH
from pinlife.domain.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from pinlife.domain.events import EVENT_TYPES
from pinlife.domain.outcomes import CheckOutcome, CheckResult, Enrolled
from pinlife.domain.pins import retry_limit
from pinlife.domain.recovery import Route
from pinlife.domain.state import PinState
from pinlife.store.event_store import EventStore
from tests.clock import FakeClock
from tests.keys import INTEGRITY
from tests.store.helpers import (
    ALL_TYPES,
    CARD_INFO,
    CORRECT,
    COUNTER,
    KIOSK,
    RESIDENT,
    SIGNATURE,
    USER,
    WRONG,
    assert_consistent,
    change,
    count,
    dump,
    enroll,
    event_types,
    one_by_one,
    run,
    run_ok,
    verify,
)


def check(answer) -> CheckOutcome:
    assert isinstance(answer, Answer), answer
    assert isinstance(answer.outcome, CheckOutcome), answer
    return answer.outcome


# -- positions, versions, envelope, chain ------------------------------------------


def test_batch_positions_versions_and_every_envelope_field(store, writer, clock):
    t1 = clock.now
    first = [enroll("card-a"), enroll("card-b", {USER: CORRECT[USER]}), verify("card-a", USER, WRONG[USER])]
    a1 = run_ok(writer, *first, caller=COUNTER)
    t2 = clock.advance(minutes=5, microseconds=7)
    second = [
        verify("card-b", USER, CORRECT[USER]),
        verify("card-a", USER, CORRECT[USER]),
        change("card-a", SIGNATURE, CORRECT[SIGNATURE].lower(), "NEW456PIN"),
    ]
    a2 = run_ok(writer, *second, caller=KIOSK)

    log = store.log.read_all(0)
    assert [(e.position, e.stream_id, e.version, e.event_type) for e in log] == [
        (1, "card-a", 1, "CardEnrolled"),
        (2, "card-b", 1, "CardEnrolled"),
        (3, "card-a", 2, "PinVerificationFailed"),
        (4, "card-b", 2, "PinVerified"),
        (5, "card-a", 3, "PinVerified"),
        (6, "card-a", 4, "PinChanged"),
    ]
    assert store.log.head_position() == 6
    assert [a.stream_version for a in a1 + a2] == [1, 1, 2, 2, 3, 4]

    commands = {c.request_id: c for c in first + second}
    assert [e.request_id for e in log] == [c.request_id for c in first + second]
    for e in log:
        in_first = commands[e.request_id] in first
        assert e.occurred_at == (t1 if in_first else t2)
        assert e.occurred_at.utcoffset() == timedelta(0)
        assert (e.channel, e.terminal_id) == (
            (COUNTER if in_first else KIOSK).channel,
            (COUNTER if in_first else KIOSK).terminal_id,
        )
        assert e.schema_version == EVENT_TYPES[e.event_type].schema_version
        assert str(uuid.UUID(e.event_id)) == e.event_id
        assert uuid.UUID(e.event_id).version == 7  # time-ordered: appended at the end of the event_id index
    assert len({e.event_id for e in log}) == len(log)
    assert [e.event_id for e in log] == sorted(e.event_id for e in log)  # in log order, within this writer
    assert [e.pin_type for e in log] == [None, None, "user_certificate", "user_certificate", "user_certificate", "signature"]
    assert [e.payload for e in log] == [
        {"pin_types": [t.value for t in CORRECT], "ward": None},
        {"pin_types": ["user_certificate"], "ward": None},
        {"purpose": "verify", "consecutive_failures": 1, "remaining_tries": 2},
        {},
        {},
        {},
    ]

    # the chain: genesis, then each event's prev_hash is its predecessor's hash
    for card_id in ("card-a", "card-b"):
        stream = store.log.stream(card_id)
        assert stream == [e for e in log if e.stream_id == card_id]
        assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        assert stream[0].prev_hash == GENESIS_HASH
        for prev, nxt in zip(stream, stream[1:]):
            assert nxt.prev_hash == prev.hash
        assert store.integrity.first_broken_link(INTEGRITY, card_id) is None
    assert len({e.hash for e in log}) == len(log)
    assert_consistent(store)


def test_batches_commit_in_order_and_a_failed_batch_takes_no_position(store, writer, clock):
    run_ok(writer, enroll("card-a"))
    run(writer, verify("card-x", USER, CORRECT[USER]))  # NotFound: appends nothing
    assert store.log.head_position() == 1
    run_ok(writer, verify("card-a", USER, WRONG[USER]), verify("card-a", RESIDENT, WRONG[RESIDENT]))
    run_ok(writer, enroll("card-b"))
    assert [(e.position, e.stream_id, e.version) for e in store.log.read_all()] == [
        (1, "card-a", 1),
        (2, "card-a", 2),
        (3, "card-a", 3),
        (4, "card-b", 1),
    ]


def test_a_later_command_in_the_same_batch_sees_the_earlier_ones(store, writer, clock):
    run_ok(writer, enroll("card-a"))
    clock.advance()
    answers = run_ok(writer, *[verify("card-a", USER, WRONG[USER]) for _ in range(4)])
    outcomes = [check(a) for a in answers]
    assert [(o.result, o.remaining_tries, o.final_try, o.locked_now) for o in outcomes] == [
        (CheckResult.WRONG_PIN, 2, False, False),
        (CheckResult.WRONG_PIN, 1, True, False),
        (CheckResult.LOCKED, 0, False, True),
        (CheckResult.LOCKED, 0, False, False),
    ]
    assert outcomes[2].recovery.route is Route.COUNTER and outcomes[3].recovery.route is Route.COUNTER
    assert [a.stream_version for a in answers] == [2, 3, 5, 6]
    stream = store.log.stream("card-a")
    assert event_types(stream) == [
        "CardEnrolled",
        "PinVerificationFailed",
        "PinVerificationFailed",
        "PinVerificationFailed",
        "PinLocked",
        "LockedPinAttempted",
    ]
    assert [e.payload.get("consecutive_failures") for e in stream[1:5]] == [1, 2, 3, 3]
    assert stream[5].payload == {"purpose": "verify", "repeated": 0}
    pin = store.cards.read_card("card-a").pins[USER]
    assert (pin.locked, pin.locked_at, pin.consecutive_failures, pin.remaining_tries) == (True, clock.now, 3, 0)
    # the other PIN types of the card are untouched
    assert store.cards.read_card("card-a").pins[RESIDENT] == PinState(RESIDENT, last_version=1)
    assert_consistent(store)


def test_enroll_change_and_verify_of_one_card_in_one_batch(store, writer):
    answers = run(
        writer,
        verify("card-a", USER, CORRECT[USER]),  # not enrolled yet: NotFound
        enroll("card-a"),
        enroll("card-a"),  # AlreadyExists: sees the enroll above
        change("card-a", USER, CORRECT[USER], "7777"),
        verify("card-a", USER, CORRECT[USER]),  # the old PIN is now wrong
        verify("card-a", USER, "7777"),  # the new one is right and resets the counter
    )
    assert isinstance(answers[0], NotFound)
    assert isinstance(answers[1].outcome, Enrolled)
    assert isinstance(answers[2], AlreadyExists)
    assert [check(a).result for a in answers[3:]] == [CheckResult.OK, CheckResult.WRONG_PIN, CheckResult.OK]
    assert event_types(store.log.stream("card-a")) == [
        "CardEnrolled",
        "PinChanged",
        "PinVerificationFailed",
        "PinVerified",
    ]
    assert store.cards.read_card("card-a").pins[USER].consecutive_failures == 0
    assert_consistent(store)


# -- projection == rebuild ----------------------------------------------------------


def test_projection_equals_rebuild_after_a_varied_scenario(store, writer, clock):
    run_ok(writer, enroll("card-a"), enroll("card-b"), enroll("card-c", {USER: CORRECT[USER], SIGNATURE: CORRECT[SIGNATURE]}))
    clock.advance()
    # card-a: the user-certificate PIN locked over several batches, then more tries
    one_by_one(writer, *[verify("card-a", USER, WRONG[USER]) for _ in range(2)])
    lock_time = clock.advance()
    run_ok(writer, verify("card-a", USER, WRONG[USER]), verify("card-a", USER, CORRECT[USER]))
    clock.advance()
    locked = check(run_ok(writer, change("card-a", USER, CORRECT[USER], "1111"))[0])
    assert (locked.result, locked.locked_now) == (CheckResult.LOCKED, False)
    # card-a: the signature PIN locked by wrong changes; with the user-certificate
    # PIN locked the only way out is the counter
    for _ in range(retry_limit(SIGNATURE)):
        clock.advance()
        last = check(run_ok(writer, change("card-a", SIGNATURE, WRONG[SIGNATURE], "QWE789"))[0])
    assert (last.result, last.locked_now, last.recovery.route) == (CheckResult.LOCKED, True, Route.COUNTER)
    # card-b: wrong tries reset by a correct verify, then by a change
    clock.advance()
    run_ok(writer, verify("card-b", RESIDENT, WRONG[RESIDENT]), verify("card-b", RESIDENT, WRONG[RESIDENT]))
    run_ok(writer, verify("card-b", RESIDENT, CORRECT[RESIDENT]), verify("card-b", CARD_INFO, WRONG[CARD_INFO]))
    run_ok(writer, change("card-b", CARD_INFO, CORRECT[CARD_INFO], "8642"))
    # card-c: signature locked while the user certificate works: the store reset
    clock.advance()
    answers = run_ok(writer, *[verify("card-c", SIGNATURE, WRONG[SIGNATURE]) for _ in range(6)])
    assert check(answers[4]).recovery.route is Route.CONVENIENCE_STORE_OR_COUNTER
    assert check(answers[5]).result is CheckResult.LOCKED

    live = store.cards.projection()
    assert live == store.cards.rebuild()
    for batch in (1, 4):  # a card's events over several pages
        assert list(store.cards.rebuilt(batch)) == sorted(live.items())
    assert_consistent(store)
    a, b, c = live["card-a"], live["card-b"], live["card-c"]
    assert a.pins[USER].locked and a.pins[USER].locked_at == lock_time
    assert a.pins[SIGNATURE].locked and a.pins[SIGNATURE].consecutive_failures == 5
    assert not a.pins[RESIDENT].locked and a.pins[RESIDENT].consecutive_failures == 0
    assert b.pins[RESIDENT].consecutive_failures == 0 and b.pins[CARD_INFO].consecutive_failures == 0
    assert set(c.pins) == {USER, SIGNATURE} and c.pins[SIGNATURE].locked
    assert store.cards.read_card("card-b") == b and store.cards.read_card("card-zzz") is None


def test_projection_equals_rebuild_after_random_batches(store, writer, clock):
    rnd = random.Random(20261126)
    cards = [f"card-{i}" for i in range(5)]
    pins = {c: dict(CORRECT) for c in cards}
    run_ok(writer, *[enroll(c) for c in cards])
    for _ in range(30):
        clock.advance(seconds=rnd.randint(1, 100))
        batch = []
        for _ in range(rnd.randint(1, 8)):
            c, t = rnd.choice(cards), rnd.choice(ALL_TYPES)
            kind = rnd.random()
            if kind < 0.55:
                batch.append(verify(c, t, WRONG[t]))
            elif kind < 0.85:
                batch.append(verify(c, t, pins[c][t]))
            else:
                new = f"{rnd.randint(0, 9999):04d}" if t is not SIGNATURE else f"P{rnd.randint(10000, 99999)}"
                batch.append(change(c, t, pins[c][t], new))
        answers = run_ok(writer, *batch)
        for cmd, ans in zip(batch, answers):
            if hasattr(cmd, "new_pin") and check(ans).result is CheckResult.OK:
                pins[cmd.card_id][cmd.pin_type] = cmd.new_pin
    assert_consistent(store)
    assert {e.event_type for e in store.log.all_events()} >= {"PinLocked", "LockedPinAttempted", "PinChanged", "PinVerified"}


# -- reading the log ----------------------------------------------------------------


def test_read_all_pages_the_log(store, writer):
    run_ok(writer, *[enroll(f"card-{i}") for i in range(4)])
    run_ok(writer, *[verify(f"card-{i % 4}", USER, WRONG[USER]) for i in range(8)])
    head = store.log.head_position()
    assert head == 12
    pages, after = [], 0
    while page := store.log.read_all(after, limit=5):
        assert len(page) <= 5
        pages.append([e.position for e in page])
        after = page[-1].position
    assert pages == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    assert [e.position for e in store.log.read_all(7, limit=2)] == [8, 9]
    assert store.log.read_all(head) == []
    assert store.log.read_all(0, limit=1000) == list(store.log.all_events(batch=3))


# -- idempotency --------------------------------------------------------------------


def test_a_retry_replays_the_first_answer_and_appends_nothing(store, writer, clock):
    enrolling = enroll("card-a")
    first_enroll = run_ok(writer, enrolling)[0]
    wrong = verify("card-a", USER, WRONG[USER])
    first = run_ok(writer, wrong)[0]
    assert check(first).remaining_tries == 2 and not first.replayed
    head, rows = store.log.head_position(), count(store.writer, "requests")

    clock.advance()
    # a retry of the same request, even with a different PIN, burns no try
    again = run_ok(writer, wrong, verify("card-a", USER, CORRECT[USER], request_id=wrong.request_id))
    assert again == [dataclasses.replace(first, replayed=True)] * 2
    assert run_ok(writer, enrolling) == [dataclasses.replace(first_enroll, replayed=True)]
    assert store.log.head_position() == head and count(store.writer, "requests") == rows
    assert store.cards.read_card("card-a").pins[USER].consecutive_failures == 1

    # later commands change the card; a retry still gets the first answer
    run_ok(writer, verify("card-a", USER, CORRECT[USER]))
    assert run_ok(writer, wrong) == [dataclasses.replace(first, replayed=True)]
    assert store.cards.read_card("card-a").pins[USER].consecutive_failures == 0


def test_a_retry_in_the_same_batch_is_replayed(store, writer):
    run_ok(writer, enroll("card-a"))
    wrong = verify("card-a", USER, WRONG[USER])
    answers = run_ok(writer, wrong, wrong, wrong)
    assert answers[1:] == [dataclasses.replace(answers[0], replayed=True)] * 2
    assert event_types(store.log.stream("card-a")) == ["CardEnrolled", "PinVerificationFailed"]


def test_the_same_request_id_from_another_terminal_is_another_request(store, writer):
    run_ok(writer, enroll("card-a"))
    wrong = verify("card-a", USER, WRONG[USER])
    at_counter = run_ok(writer, wrong, caller=COUNTER)[0]
    at_kiosk = run_ok(writer, wrong, caller=KIOSK)[0]
    assert not at_kiosk.replayed
    assert (check(at_counter).remaining_tries, check(at_kiosk).remaining_tries) == (2, 1)
    stream = store.log.stream("card-a")
    assert [(e.terminal_id, e.request_id) for e in stream[1:]] == [
        (COUNTER.terminal_id, wrong.request_id),
        (KIOSK.terminal_id, wrong.request_id),
    ]
    # and each terminal's retry replays its own answer
    assert run_ok(writer, wrong, caller=KIOSK)[0] == dataclasses.replace(at_kiosk, replayed=True)
    assert run_ok(writer, wrong, caller=COUNTER)[0] == dataclasses.replace(at_counter, replayed=True)


REUSES = {
    "other card": lambda r: verify("card-b", USER, WRONG[USER], request_id=r),
    "other command": lambda r: change("card-a", USER, WRONG[USER], "5555", request_id=r),
    "other pin type": lambda r: verify("card-a", RESIDENT, WRONG[RESIDENT], request_id=r),
    "enroll": lambda r: enroll("card-c", request_id=r),
}


@pytest.mark.parametrize("same_batch", [False, True], ids=["later", "same-batch"])
@pytest.mark.parametrize("reuse", list(REUSES), ids=list(REUSES))
def test_a_request_id_reused_for_another_request_is_refused(store, writer, reuse, same_batch):
    run_ok(writer, enroll("card-a"), enroll("card-b"))
    first = verify("card-a", USER, WRONG[USER])
    other = REUSES[reuse](first.request_id)
    if same_batch:
        answers = run(writer, first, other)
        assert isinstance(answers[0], Answer)
        refused = answers[1]
    else:
        run_ok(writer, first)
        head, rows, cards = store.log.head_position(), dump(store.writer, "requests"), store.cards.projection()
        refused = run(writer, other)[0]
        assert store.log.head_position() == head
        assert dump(store.writer, "requests") == rows
        assert store.cards.projection() == cards
    assert isinstance(refused, InvalidInput), refused
    assert [v.field for v in refused.violations] == ["request_id"]
    assert store.log.head_position() == 3  # two enrolments and the first verify
    assert store.cards.read_card("card-c") is None
    assert count(store.writer, "requests") == 3
    # the first request is still replayed as before
    assert run_ok(writer, first)[0].replayed


# -- failures are per item ----------------------------------------------------------


def test_a_domain_error_fails_only_its_own_item(store, writer):
    run_ok(writer, enroll("card-a"), enroll("card-b", {USER: CORRECT[USER]}))
    batch = [
        verify("card-x", USER, CORRECT[USER]),
        verify("card-a", USER, WRONG[USER]),
        enroll("card-a"),
        verify("card-b", SIGNATURE, CORRECT[SIGNATURE]),
        enroll("card-c"),
    ]
    answers = run(writer, *batch)
    assert isinstance(answers[0], NotFound)
    assert check(answers[1]).result is CheckResult.WRONG_PIN
    assert isinstance(answers[2], AlreadyExists)
    assert isinstance(answers[3], PreconditionFailed)
    assert isinstance(answers[4].outcome, Enrolled)
    assert [(e.stream_id, e.event_type) for e in store.log.read_all(2)] == [
        ("card-a", "PinVerificationFailed"),
        ("card-c", "CardEnrolled"),
    ]
    remembered = {r["request_id"] for r in dump(store.writer, "requests")}
    assert {batch[1].request_id, batch[4].request_id} <= remembered
    assert not {batch[i].request_id for i in (0, 2, 3)} & remembered
    assert store.cards.read_card("card-x") is None
    assert_consistent(store)


def test_an_unexpected_error_fails_only_its_own_item(store, writer):
    run_ok(writer, enroll("card-a"), enroll("card-b"))
    with store.writer.begin() as conn:  # a damaged store: a verifier is missing, which card-a's MAC covers
        conn.execute(text("DELETE FROM secrets WHERE card_id = 'card-a' AND kind = 'pin' AND name = 'user_certificate'"))
    answers = run(writer, verify("card-b", USER, WRONG[USER]), verify("card-a", USER, CORRECT[USER]), enroll("card-c"))
    assert isinstance(answers[1], IntegrityViolation) and answers[1].stream_id == "card-a"
    assert check(answers[0]).result is CheckResult.WRONG_PIN
    assert isinstance(answers[2].outcome, Enrolled)
    assert [(e.stream_id, e.event_type) for e in store.log.read_all(2)] == [
        ("card-b", "PinVerificationFailed"),
        ("card-c", "CardEnrolled"),
    ]
    assert_consistent(store)


# -- the clock ----------------------------------------------------------------------

JST = timezone(timedelta(hours=9), "JST")


def test_occurred_at_is_the_clock_instant_whatever_its_time_zone(db_url, keys):
    """A clock may return any aware datetime; the store keeps the instant."""
    at = datetime(2026, 4, 1, 18, 30, 0, 250000, tzinfo=JST)
    s = EventStore(db_url)
    try:
        w = ThreadRunner(s, keys, FakeClock(at))
        run_ok(w, enroll("card-a"), *[verify("card-a", USER, WRONG[USER]) for _ in range(3)])
        assert [e.occurred_at for e in s.log.stream("card-a")] == [at] * 5
        assert s.cards.read_card("card-a").pins[USER].locked_at == at
        assert s.integrity.first_broken_link(INTEGRITY) is None
    finally:
        s.close()
