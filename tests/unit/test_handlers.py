"""The command handlers and the batch transaction (service/app/handlers.py,
service/app/batch.py) against the in-memory store (tests/unit/fakes.py):
replays, request-id reuse, verifiers and re-keying, per-command failure in a
batch, retries and an unavailable store. No I/O: milliseconds each. The
same behaviour on SQLite and PostgreSQL is in tests/store."""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import grpc
import pytest

from pinlife.api.errors import code_for, to_status
from pinlife.app import batch
from pinlife.app.answers import Answer, decode_refusal, encode_refusal
from pinlife.app.batch import ThreadRunner, run_batch
from pinlife.app.handlers import Caller, MissingVerifier, ReadCard
from pinlife.app.ports import Envelope, StoredRequest, StoreUnavailable
from pinlife.domain.commands import ChangePin, EnrollCard, RequestProxyReset, ResetPin, VerifyPin
from pinlife.domain.documents import Applicant, DocumentType
from pinlife.domain.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    PreconditionViolation,
)
from pinlife.domain.events import AccessDenied, CardEnrolled, LockedPinAttempted, Purpose
from pinlife.domain.outcomes import CheckOutcome, CheckResult, Enrolled
from pinlife.domain.pins import PinType
from pinlife.domain.policy import Policy
from pinlife.domain.recovery import CardView, PinView, recovery_for
from pinlife.domain.state import PinState
from pinlife.domain.streams import terminal_stream
from pinlife.domain.throttle import Throttled
from pinlife.keys.ring import SecretRef
from tests.clock import FakeClock
from tests.keys import ring
from tests.unit.fakes import Conflict, FakeStore, Unavailable
from tests.unit.helpers import ALL_TYPES, CORRECT, RESIDENT, SIGNATURE, USER, WRONG, change, enroll, verify

T0 = datetime(2026, 4, 1, 1, 30, tzinfo=UTC)
COUNTER = Caller("ward_office", "terminal-counter-01", office="naka")
READER = Caller("medical_reader", "terminal-reader-01")
OLD_KEY, NEW_KEY = b"o" * 32, b"n" * 32
KEYS = ring("k-new", {"k-new": NEW_KEY})


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def runner(store, clock) -> ThreadRunner:
    return ThreadRunner(store, KEYS, clock)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch) -> list[float]:
    """run_batch's pause between attempts, recorded instead of slept."""
    pauses: list[float] = []
    monkeypatch.setattr(batch, "time", SimpleNamespace(**{**vars(time), "sleep": pauses.append}))
    return pauses


def run(runner: ThreadRunner, *commands, caller: Caller = COUNTER) -> list:
    """All the commands in one batch (one transaction)."""
    return runner.process([(c, caller) for c in commands])


def run_ok(runner: ThreadRunner, *commands, caller: Caller = COUNTER) -> list[Answer]:
    results = run(runner, *commands, caller=caller)
    assert not [r for r in results if isinstance(r, BaseException)], results
    return results


def check(answer) -> CheckOutcome:
    assert isinstance(answer, Answer) and isinstance(answer.outcome, CheckOutcome), answer
    return answer.outcome


def event_types(store: FakeStore, stream_id: str) -> list[str]:
    return [e.event_type for e in store.log.stream(stream_id)]


# -- enroll and verify ----------------------------------------------------------


def test_given_an_enrolled_card_when_pins_are_verified_then_wrong_counts_and_right_resets(store, runner):
    enrolled = run_ok(runner, enroll(CORRECT, "card-a"))[0]
    fresh = tuple(PinView(PinState(t, last_version=1)) for t in PinType)  # the answer shows each PIN set, in type order
    assert enrolled == Answer(Enrolled("card-a", ALL_TYPES), 1, pins=fresh)

    wrong, right = run_ok(runner, verify(USER, WRONG[USER], "card-a"), verify(USER, CORRECT[USER], "card-a"))

    assert (check(wrong).result, check(wrong).remaining_tries, wrong.stream_version) == (CheckResult.WRONG_PIN, 2, 2)
    assert (check(right).result, check(right).remaining_tries, right.stream_version) == (CheckResult.OK, 3, 3)
    assert event_types(store, "card-a") == ["CardEnrolled", "PinVerificationFailed", "PinVerified"]
    assert [e.occurred_at for e in store.log.stream("card-a")] == [T0] * 3
    assert store.cards.read_card("card-a").pins[USER].consecutive_failures == 0


def test_given_wrong_tries_up_to_the_limit_in_one_batch_then_the_last_locks_and_later_ones_are_locked(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    answers = run_ok(runner, *[verify(USER, WRONG[USER], "card-a") for _ in range(4)])
    assert [(check(a).result, check(a).locked_now) for a in answers] == [
        (CheckResult.WRONG_PIN, False),
        (CheckResult.WRONG_PIN, False),
        (CheckResult.LOCKED, True),
        (CheckResult.LOCKED, False),
    ]
    assert store.cards.read_card("card-a").pins[USER].locked
    assert event_types(store, "card-a")[-3:] == ["PinVerificationFailed", "PinLocked", "LockedPinAttempted"]


def test_given_a_locked_pin_when_its_status_is_read_then_the_way_out_is_decided_at_the_batch_instant(store, runner, clock):
    run_ok(runner, enroll(CORRECT, "card-a"), *[verify(USER, WRONG[USER], "card-a") for _ in range(3)])
    clock.advance(hours=5)  # the read's batch runs later than the lock

    (view,) = run_ok(runner, ReadCard("card-a"))

    shown = {v.pin.pin_type: v.recovery for v in view.pins}
    assert shown[USER] == recovery_for(view.state, USER, Policy(), clock.now)
    assert [t for t, r in shown.items() if r is not None] == [USER]  # only the locked PIN has a way out to show
    (only,) = run_ok(runner, ReadCard("card-a", only=SIGNATURE))
    assert [v.pin.pin_type for v in only.pins] == [SIGNATURE]


def test_given_an_auditor_when_it_reads_a_status_then_the_read_is_recorded_on_its_stream(store, runner):
    auditor = Caller("auditor", "audit-01")
    run_ok(runner, enroll(CORRECT, "card-a"))
    run(runner, ReadCard("card-a", only=USER), ReadCard("card-x"), caller=auditor)
    run(runner, ReadCard("card-a"), caller=READER)  # other roles' status reads record nothing
    reads = [e.event for e in store.log.stream(terminal_stream("audit-01"))]
    assert [(r.rpc, r.card_id, r.filter, r.events_returned) for r in reads] == [
        ("GetPinStatus", "card-a", '{"pin_type": "user_certificate"}', 1),
        ("GetPinStatus", "card-x", "{}", 0),
    ]
    assert store.log.stream(terminal_stream(READER.terminal_id)) == []


def test_given_a_reset_when_it_is_replayed_then_the_answer_shows_the_pin_as_the_first_answer_did(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    reset = ResetPin.create(
        "reset-000001", "card-a", USER, "5555", Applicant.HOLDER, [(DocumentType.MY_NUMBER_CARD, "")], False, None
    )
    first = run_ok(runner, reset)[0]
    run_ok(runner, verify(USER, WRONG[USER], "card-a"))  # the PIN has moved on since

    again = run_ok(runner, reset)[0]

    assert first.pins == (PinView(PinState(USER, last_version=2)),)
    assert (again.replayed, again.outcome, again.pins) == (True, first.outcome, first.pins)


# -- idempotent retries -----------------------------------------------------------


def test_given_an_answered_request_when_it_is_retried_then_the_first_answer_is_replayed_and_nothing_appended(
    store, runner, clock
):
    run_ok(runner, enroll(CORRECT, "card-a"))
    wrong = verify(USER, WRONG[USER], "card-a")
    first = run_ok(runner, wrong)[0]
    head, answers_kept = store.log.head_position(), dict(store.requests)

    clock.advance(minutes=1)
    # even with the right PIN, a retry of the same request burns no try and is not re-checked
    retry_with_right_pin = VerifyPin.create(wrong.request_id, "card-a", USER, CORRECT[USER])
    again = run_ok(runner, wrong, retry_with_right_pin)

    assert not first.replayed
    assert again == [dataclasses.replace(first, replayed=True)] * 2
    assert store.log.head_position() == head
    assert store.requests == answers_kept
    assert store.cards.read_card("card-a").pins[USER].consecutive_failures == 1


def test_given_a_request_when_it_is_repeated_in_the_same_batch_then_only_the_first_is_applied(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    wrong = verify(USER, WRONG[USER], "card-a")
    answers = run_ok(runner, wrong, wrong, wrong)
    assert answers[1:] == [dataclasses.replace(answers[0], replayed=True)] * 2
    assert event_types(store, "card-a") == ["CardEnrolled", "PinVerificationFailed"]


def test_given_an_answered_request_when_another_terminal_uses_its_id_then_it_is_a_new_request(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    wrong = verify(USER, WRONG[USER], "card-a")
    at_counter = run_ok(runner, wrong, caller=COUNTER)[0]
    at_reader = run_ok(runner, wrong, caller=READER)[0]
    assert not at_reader.replayed
    assert (check(at_counter).remaining_tries, check(at_reader).remaining_tries) == (2, 1)


def _reset(request_id: str, documents: list) -> ResetPin:
    return ResetPin.create(request_id, "card-a", USER, "5555", Applicant.HOLDER, documents, False, None)


def test_given_a_refused_request_when_it_is_retried_then_the_refusal_is_replayed_and_nothing_appended(store, runner, clock):
    """A refusal the rules decided is a kept answer (issue 22, item 8): a
    retry, in the same batch or later, even with the documents now complete,
    gets the same error marked replayed; nothing more is appended or kept."""
    run_ok(runner, enroll(CORRECT, "card-a"))
    missing = _reset("reset-000002", [])
    first, same_batch = run(runner, missing, missing)
    assert isinstance(first, PreconditionFailed) and not first.replayed
    head, kept = store.log.head_position(), dict(store.requests)
    assert event_types(store, "card-a") == ["CardEnrolled", "CounterProcedureRefused"]
    assert kept[(COUNTER.terminal_id, "reset-000002")].outcome["kind"] == "refused"

    clock.advance(hours=1)
    (complete,) = run(runner, _reset("reset-000002", [(DocumentType.MY_NUMBER_CARD, "")]))
    for again in (same_batch, complete):
        assert isinstance(again, PreconditionFailed) and again.replayed
        assert (str(again), again.violations) == (str(first), first.violations)
    assert store.log.head_position() == head and store.requests == kept
    assert store.cards.read_card("card-a").pins[USER].last_version == 1  # never reset
    # the same id for another request is still refused as reused; a new id is decided afresh
    (other,) = run(runner, ResetPin.create("reset-000002", "card-a", SIGNATURE, "ABC123", Applicant.HOLDER, [], False, None))
    assert isinstance(other, InvalidInput) and [v.field for v in other.violations] == ["request_id"]
    assert not run_ok(runner, _reset("reset-000003", [(DocumentType.MY_NUMBER_CARD, "")]))[0].replayed


def test_given_an_unknown_card_when_retried_after_enrolment_then_it_is_decided_afresh(store, runner):
    """NOT_FOUND before anything is decided is not kept: nothing was recorded on the card."""
    wrong = verify(USER, WRONG[USER], "card-a")
    assert isinstance(run(runner, wrong)[0], NotFound)
    assert store.requests == {}
    run_ok(runner, enroll(CORRECT, "card-a"))
    assert not run_ok(runner, wrong)[0].replayed


REFUSALS = [
    PreconditionFailed([PreconditionViolation("DOCUMENT_MISSING", "documents/my_number_card", "the holder's card")]),
    InvalidInput([FieldViolation(f"f{i}", "bad") for i in range(30)]),  # 20 and "and 10 more": kept as given
    NotFound("card card-a is not enrolled"),
    AlreadyExists("card card-a is already enrolled"),
]


@pytest.mark.parametrize("error", REFUSALS, ids=lambda e: type(e).__name__)
def test_a_kept_refusal_decodes_as_given_and_crosses_the_writer_process_marked_replayed(error):
    stored = encode_refusal(error)
    assert stored is not None and json.loads(json.dumps(stored)) == stored
    again = pickle.loads(pickle.dumps(decode_refusal(stored)))
    assert type(again) is type(error) and again.replayed and not error.replayed
    assert (str(again), getattr(again, "violations", None)) == (str(error), getattr(error, "violations", None))
    assert to_status(again) == to_status(error)  # the same code, message and details


def test_a_kept_success_is_not_a_refusal_and_transient_errors_are_not_kept():
    assert decode_refusal({"kind": "check", "result": "ok"}) is None
    assert encode_refusal(Throttled("t", timedelta(seconds=5))) is None


REUSES = {
    "other command": lambda rid: ChangePin.create(rid, "card-a", USER, WRONG[USER], "5555"),
    "other card": lambda rid: VerifyPin.create(rid, "card-b", USER, WRONG[USER]),
    "other pin type": lambda rid: VerifyPin.create(rid, "card-a", RESIDENT, WRONG[RESIDENT]),
    "enroll": lambda rid: EnrollCard.create(rid, "card-c", list(CORRECT.items())),
}


@pytest.mark.parametrize("same_batch", [False, True], ids=["later", "same-batch"])
@pytest.mark.parametrize("reuse", list(REUSES))
def test_given_a_used_request_id_when_reused_for_another_request_then_invalid_argument_on_request_id(
    store, runner, reuse, same_batch
):
    run_ok(runner, enroll(CORRECT, "card-a"), enroll(CORRECT, "card-b"))
    first = verify(USER, WRONG[USER], "card-a")
    other = REUSES[reuse](first.request_id)
    if same_batch:
        first_answer, refused = run(runner, first, other)
    else:
        first_answer = run_ok(runner, first)[0]
        refused = run(runner, other)[0]

    assert isinstance(refused, InvalidInput), refused
    assert code_for(refused) is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.violations] == ["request_id"]
    # nothing appended or remembered for it: two enrolments and the first verify
    assert [(e.stream_id, e.event_type) for e in store.events][2:] == [("card-a", "PinVerificationFailed")]
    assert len(store.requests) == 3
    assert store.cards.read_card("card-c") is None
    assert store.cards.read_card("card-b").pins[USER].consecutive_failures == 0
    assert store.cards.read_card("card-a").pins[RESIDENT].consecutive_failures == 0
    # and the first request is still replayed as before
    assert run_ok(runner, first) == [dataclasses.replace(first_answer, replayed=True)]


# -- verifiers ----------------------------------------------------------------------

# Signature PINs with letters outside a-f: they cannot turn up in a hex digest by chance.
SIG_FIRST, SIG_NEW = "QWXYZ7391KJ", "PLMNO8462TR"


def test_given_enroll_and_change_then_new_verifiers_are_stored_never_in_an_event_or_answer(store, runner):
    answers = run_ok(runner, enroll({USER: "7391", SIGNATURE: SIG_FIRST}, "card-a"))
    ref = SecretRef.pin("card-a", SIGNATURE)
    enrolled_verifier = store.cards.secret(ref)
    assert enrolled_verifier.key_id == "k-new"
    assert KEYS.matches(enrolled_verifier, ref, SIG_FIRST)
    assert KEYS.matches(store.cards.secret(SecretRef.pin("card-a", USER)), SecretRef.pin("card-a", USER), "7391")

    answers += run_ok(
        runner,
        change(SIGNATURE, SIG_FIRST, SIG_NEW, "card-a"),
        verify(SIGNATURE, SIG_FIRST, "card-a"),
        verify(SIGNATURE, SIG_NEW, "card-a"),
    )
    assert [check(a).result for a in answers[1:]] == [CheckResult.OK, CheckResult.WRONG_PIN, CheckResult.OK]
    assert store.cards.secret(ref) != enrolled_verifier and KEYS.matches(store.cards.secret(ref), ref, SIG_NEW)

    written = repr((store.events, store.requests, answers))
    assert "PinChanged" in written and "k-new" not in written  # the dump does reach events; no verifier in it
    for pin in (SIG_FIRST, SIG_NEW):
        assert pin not in written.upper()
    for verifier in (enrolled_verifier, store.cards.secret(ref)):
        assert verifier.digest not in written


def test_given_a_failed_change_then_the_verifier_is_kept(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    before = dict(store.secrets)
    assert check(run_ok(runner, change(USER, WRONG[USER], "8080", "card-a"))[0]).result is CheckResult.WRONG_PIN
    assert store.secrets == before
    assert check(run_ok(runner, verify(USER, "8080", "card-a"))[0]).result is CheckResult.WRONG_PIN


def enrolled_under_the_old_key(store, clock) -> ThreadRunner:
    """card-a enrolled under k-old; the runner returned has k-new current and k-old retired."""
    run_ok(ThreadRunner(store, ring("k-old", {"k-old": OLD_KEY}), clock), enroll(CORRECT, "card-a"))
    assert {v.key_id for v in store.secrets.values()} == {"k-old"}
    return ThreadRunner(store, ring("k-new", {"k-old": OLD_KEY, "k-new": NEW_KEY}), clock)


def test_given_a_verifier_under_a_retired_key_when_verified_correctly_then_it_is_rekeyed_to_the_current_key(store, clock):
    rotated = enrolled_under_the_old_key(store, clock)
    answer = run_ok(rotated, verify(USER, CORRECT[USER], "card-a"))[0]

    assert check(answer).result is CheckResult.OK
    ref = SecretRef.pin("card-a", USER)
    assert store.cards.secret(ref).key_id == "k-new"
    # other PIN types stay under the old key until they are used
    assert {t: store.cards.secret(SecretRef.pin("card-a", t)).key_id for t in ALL_TYPES if t is not USER} == {
        t: "k-old" for t in ALL_TYPES if t is not USER
    }
    # the re-keyed verifier works once the old key is gone; no event records the re-keying
    only_new_key = ThreadRunner(store, KEYS, clock)
    assert check(run_ok(only_new_key, verify(USER, CORRECT[USER], "card-a"))[0]).result is CheckResult.OK
    assert event_types(store, "card-a") == ["CardEnrolled", "PinVerified", "PinVerified"]


def test_given_a_verifier_under_a_retired_key_when_the_pin_is_changed_then_the_new_pin_is_stored_under_the_current_key(
    store, clock
):
    rotated = enrolled_under_the_old_key(store, clock)
    assert check(run_ok(rotated, change(SIGNATURE, CORRECT[SIGNATURE], SIG_NEW, "card-a"))[0]).result is CheckResult.OK

    ref = SecretRef.pin("card-a", SIGNATURE)
    assert store.cards.secret(ref).key_id == "k-new" and KEYS.matches(store.cards.secret(ref), ref, SIG_NEW)


def test_given_a_verifier_under_a_retired_key_when_verified_wrongly_then_it_keeps_the_old_key(store, clock):
    rotated = enrolled_under_the_old_key(store, clock)
    before = store.cards.secret(SecretRef.pin("card-a", USER))

    answer = run_ok(rotated, verify(USER, WRONG[USER], "card-a"))[0]

    assert check(answer).result is CheckResult.WRONG_PIN
    assert store.cards.secret(SecretRef.pin("card-a", USER)) == before


# -- failures are per command -----------------------------------------------------------


def test_given_a_batch_with_an_unknown_card_then_only_that_command_fails_and_the_others_are_written(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    answered_before, transactions_before = set(store.requests), len(store.locked)
    commands = [verify(USER, WRONG[USER], "card-a"), verify(USER, CORRECT[USER], "card-x"), enroll(CORRECT, "card-b")]

    wrong, unknown, enrolled = run(runner, *commands)

    assert isinstance(unknown, NotFound)
    assert check(wrong).result is CheckResult.WRONG_PIN
    assert enrolled.outcome == Enrolled("card-b", ALL_TYPES)
    assert [(e.stream_id, e.event_type) for e in store.events[1:]] == [
        ("card-a", "PinVerificationFailed"),
        ("card-b", "CardEnrolled"),
    ]
    assert store.cards.read_card("card-x") is None
    assert set(store.requests) - answered_before == {(COUNTER.terminal_id, commands[i].request_id) for i in (0, 2)}
    assert len(store.locked) == transactions_before + 1  # one transaction: a domain error does not split the batch


def test_given_a_wrong_verify_when_a_status_read_follows_in_the_same_batch_then_it_sees_the_failure_and_records_nothing(
    store, runner
):
    run_ok(runner, enroll(CORRECT, "card-a"))
    requests_before = len(store.requests)

    wrong, status, unknown = run(runner, verify(USER, WRONG[USER], "card-a"), ReadCard("card-a"), ReadCard("card-x"))

    assert check(wrong).remaining_tries == 2
    assert isinstance(status, CardView)
    card = status.state
    assert (card.version, card.pins[USER].consecutive_failures, card.pins[USER].remaining_tries) == (2, 1, 2)
    assert unknown is None
    assert event_types(store, "card-a") == ["CardEnrolled", "PinVerificationFailed"]
    assert store.log.head_position() == 2
    assert len(store.requests) == requests_before + 1  # the verify's answer only


def test_given_only_status_reads_then_no_card_is_locked_and_only_a_miss_is_counted(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"))
    events, requests = list(store.events), dict(store.requests)

    status, unknown = run(runner, ReadCard("card-a"), ReadCard("card-x"), caller=READER)

    assert status.state == store.cards.read_card("card-a") and unknown is None
    assert store.locked[-1] == {terminal_stream(READER.terminal_id)}  # the terminal's window, no card
    assert (store.events, store.requests) == (events, requests)
    assert set(store.windows[READER.terminal_id].last_failure) == {"card-x"}  # enumeration counts


def test_given_a_missing_verifier_when_the_batch_is_split_then_only_that_command_fails(store, runner):
    run_ok(runner, enroll(CORRECT, "card-a"), enroll(CORRECT, "card-b"))
    del store.secrets[SecretRef.pin("card-a", USER)]  # a damaged store

    wrong, damaged, enrolled = run(
        runner, verify(USER, WRONG[USER], "card-b"), verify(USER, CORRECT[USER], "card-a"), enroll(CORRECT, "card-c")
    )

    assert isinstance(damaged, MissingVerifier)
    assert check(wrong).result is CheckResult.WRONG_PIN
    assert isinstance(enrolled.outcome, Enrolled)
    # the first, failed transaction left nothing behind: each command is written once
    assert [(e.stream_id, e.event_type) for e in store.events[2:]] == [
        ("card-b", "PinVerificationFailed"),
        ("card-c", "CardEnrolled"),
    ]
    assert event_types(store, "card-a") == ["CardEnrolled"]


# -- conflicts and an unavailable store ----------------------------------------------------


def test_given_a_retryable_conflict_then_the_batch_is_retried_and_written_once(store, runner, no_backoff):
    run_ok(runner, enroll(CORRECT, "card-a"))
    store.fail_next(2, Conflict)

    answers = run(runner, verify(USER, WRONG[USER], "card-a"), enroll(CORRECT, "card-b"))

    assert check(answers[0]).remaining_tries == 2 and answers[0].stream_version == 2
    assert answers[1].outcome == Enrolled("card-b", ALL_TYPES)
    assert [(e.stream_id, e.event_type) for e in store.events[1:]] == [
        ("card-a", "PinVerificationFailed"),
        ("card-b", "CardEnrolled"),
    ]
    assert len(no_backoff) == 2  # a pause before each new attempt
    assert store.attempts[-3:] == [False, True, True]  # the retries lock the terminals the first read unlocked


def test_given_conflicts_on_every_attempt_then_the_command_fails_and_nothing_is_written(store, clock):
    runner = ThreadRunner(store, KEYS, clock, Policy(), attempts=3)
    run_ok(runner, enroll(CORRECT, "card-a"))
    store.fail_next(3, Conflict)

    answers = run(runner, verify(USER, WRONG[USER], "card-a"))

    assert len(answers) == 1 and isinstance(answers[0], Conflict)
    assert event_types(store, "card-a") == ["CardEnrolled"]
    assert check(run_ok(runner, verify(USER, WRONG[USER], "card-a"))[0]).remaining_tries == 2


def test_given_an_unavailable_store_then_every_command_of_the_batch_gets_store_unavailable(store, runner, clock):
    run_ok(runner, enroll(CORRECT, "card-a"))
    store.fail_next(1, Unavailable)
    items = [
        (verify(USER, WRONG[USER], "card-a"), COUNTER),
        (enroll(CORRECT, "card-b"), COUNTER),
        (ReadCard("card-a"), READER),
    ]

    results = run_batch(store, KEYS, clock, Policy(), items)

    assert len(results) == 3 and all(isinstance(r, StoreUnavailable) for r in results)
    assert store.log.head_position() == 1 and store.cards.read_card("card-b") is None
    # not retried: the next batch finds the store back and writes normally
    assert check(run_ok(runner, items[0][0])[0]).remaining_tries == 2


# -- the fake itself --------------------------------------------------------------------


def write_a_little(uow) -> None:
    env = Envelope("ward_office", "terminal-counter-01", "req-fake-0001", T0)
    uow.append("card-a", [CardEnrolled((USER,))], env)
    uow.append_terminal("terminal-counter-01", [AccessDenied("/x/Y", "ward_office", "")], env)
    uow.set_secret(SecretRef.pin("card-a", USER), KEYS.make(SecretRef.pin("card-a", USER), "1234"))
    uow.remember(StoredRequest("terminal-counter-01", "req-fake-0001", "card-a", "EnrollCard", "fp", {}, 1), T0)


def test_given_a_unit_of_work_when_its_block_raises_then_the_fake_keeps_nothing_and_otherwise_everything(store):
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        write_a_little(uow)
        assert uow.read_card("card-a").version == 1  # the transaction sees its own writes
        raise RuntimeError
    assert (store.events, store.states, store.secrets, store.requests) == ([], {}, {}, {})

    with store.unit_of_work() as uow:
        write_a_little(uow)
    assert [(e.position, e.stream_id, e.version) for e in store.events] == [
        (1, "card-a", 1),
        (2, "terminal:terminal-counter-01", 1),
    ]
    assert store.cards.read_card("card-a").pins[USER].last_version == 1
    assert store.cards.secret(SecretRef.pin("card-a", USER)).key_id == "k-new"
    assert ("terminal-counter-01", "req-fake-0001") in store.requests


# -- repeated refusals and attempts (service/domain/repeats.py) ------------------------------


def test_given_a_locked_pin_when_500_attempts_are_made_then_the_card_history_stays_bounded_and_counts_them(store, runner, clock):
    run_ok(runner, enroll(CORRECT, "card-a"), *[verify(USER, WRONG[USER], "card-a") for _ in range(3)])
    before = len(store.log.stream("card-a"))
    for i in range(500):
        clock.now = T0 + timedelta(seconds=2 * i)  # 1,000 s: windows open at 0 and 600 s
        assert check(run_ok(runner, verify(USER, WRONG[USER], "card-a"), caller=READER)[0]).result is CheckResult.LOCKED
    attempts = [e.event for e in store.log.stream("card-a")][before:]
    assert attempts == [LockedPinAttempted(USER, Purpose.VERIFY, 0), LockedPinAttempted(USER, Purpose.VERIFY, 299)]
    pending = store.repeats[READER.terminal_id]
    assert [p.repeats for p in pending.values()] == [199]  # 2 recorded + 299 + 199 = 500, none lost
    assert store.log.stream(terminal_stream(READER.terminal_id)) == []


def test_given_an_open_inquiry_when_it_is_reissued_500_times_then_one_refusal_is_recorded_with_the_count(store, runner, clock):
    clock.now = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo, a Wednesday
    run_ok(runner, enroll(CORRECT, "card-a"))
    docs = [(DocumentType.MY_NUMBER_CARD, ""), (DocumentType.OTHER_ID, "")]
    ask = [RequestProxyReset.create(f"proxy-{i:06}", "card-a", USER, docs, None) for i in range(500)]
    assert isinstance(run(runner, ask[0])[0], Answer)
    refusals = [run(runner, cmd)[0] for cmd in ask[1:250]]
    clock.advance(minutes=11)
    refusals += [run(runner, cmd)[0] for cmd in ask[250:]]
    assert all(code_for(r) is grpc.StatusCode.FAILED_PRECONDITION for r in refusals)
    recorded = [e.event for e in store.log.stream("card-a")][1:]
    assert [type(e).__name__ for e in recorded] == ["ProxyInquiryIssued", "ResetRefused", "ResetRefused"]
    assert [e.repeated for e in recorded[1:]] == [0, 248]  # the 249 of the first window, then the next window's first
