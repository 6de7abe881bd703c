"""The verify / change / enroll rules of DESIGN.md §2, as given-events /
when-command / then-events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given as hgiven
from hypothesis import settings
from hypothesis import strategies as st

from pinlife.domain.errors import AlreadyExists, DomainError, NotFound, PreconditionFailed
from pinlife.domain.events import (
    CardEnrolled,
    LockedPinAttempted,
    PinChanged,
    PinLocked,
    PinVerificationFailed,
    PinVerified,
    Purpose,
)
from pinlife.domain.outcomes import CheckOutcome, CheckResult, Enrolled
from pinlife.domain.pins import retry_limit
from pinlife.domain.recovery import Route
from pinlife.domain.state import CardState
from tests.unit.helpers import (
    ALL_TYPES,
    CARD,
    CARD_INFO,
    CORRECT,
    FOUR_DIGIT_TYPES,
    RESIDENT,
    SIGNATURE,
    USER,
    WRONG,
    change,
    enroll,
    enrolled,
    failed,
    failures,
    given,
    never_checked,
    then,
    verify,
    when,
)

VERIFY, CHANGE = Purpose.VERIFY, Purpose.CHANGE


def locked(pin_type):
    """The events of a PIN that was locked by wrong verifies."""
    limit = retry_limit(pin_type)
    return [*failures(pin_type, limit), PinLocked(pin_type, limit)]


# --- verify -----------------------------------------------------------------


@pytest.mark.parametrize("pin_type", ALL_TYPES)
def test_correct_verify(pin_type):
    state = given(enrolled())
    decision = when(state, verify(pin_type, CORRECT[pin_type]))
    assert decision.events == (PinVerified(pin_type),)
    limit = retry_limit(pin_type)
    assert decision.outcome == CheckOutcome(CheckResult.OK, limit, False, limit)
    assert decision.new_pins == {}


def test_lower_case_signature_pin_is_checked_upper_cased():
    state = given(enrolled())
    decision = when(state, verify(SIGNATURE, "abc123"), {SIGNATURE: "ABC123"})
    assert decision.events == (PinVerified(SIGNATURE),)


@pytest.mark.parametrize("pin_type", FOUR_DIGIT_TYPES)
def test_wrong_four_digit_verifies_count_down_and_flag_the_final_try(pin_type):
    state = given(enrolled())

    first = when(state, verify(pin_type, WRONG[pin_type]))
    assert first.events == (PinVerificationFailed(pin_type, VERIFY, 1, 2),)
    assert first.outcome == CheckOutcome(CheckResult.WRONG_PIN, 2, False, 3)

    state = then(state, first)
    second = when(state, verify(pin_type, WRONG[pin_type]))
    assert second.events == (PinVerificationFailed(pin_type, VERIFY, 2, 1),)
    assert second.outcome == CheckOutcome(CheckResult.WRONG_PIN, 1, True, 3)


@pytest.mark.parametrize("pin_type", FOUR_DIGIT_TYPES)
def test_the_third_wrong_four_digit_try_locks(pin_type):
    state = given(enrolled(), *failures(pin_type, 2))
    decision = when(state, verify(pin_type, WRONG[pin_type]))
    assert decision.events == (PinVerificationFailed(pin_type, VERIFY, 3, 0), PinLocked(pin_type, 3))
    assert decision.outcome.result is CheckResult.LOCKED
    assert decision.outcome.locked_now is True
    assert decision.outcome.remaining_tries == 0
    assert decision.outcome.final_try is False
    assert decision.outcome.recovery.route is Route.COUNTER


def test_signature_counts_five_and_locks_on_the_fifth():
    state = given(enrolled())
    expected = [(4, False), (3, False), (2, False), (1, True)]
    for n, (remaining, final) in enumerate(expected, start=1):
        decision = when(state, verify(SIGNATURE, WRONG[SIGNATURE]))
        assert decision.events == (PinVerificationFailed(SIGNATURE, VERIFY, n, remaining),)
        assert decision.outcome == CheckOutcome(CheckResult.WRONG_PIN, remaining, final, 5)
        state = then(state, decision)

    decision = when(state, verify(SIGNATURE, WRONG[SIGNATURE]))
    assert decision.events == (PinVerificationFailed(SIGNATURE, VERIFY, 5, 0), PinLocked(SIGNATURE, 5))
    assert decision.outcome.result is CheckResult.LOCKED
    assert decision.outcome.locked_now
    assert then(state, decision).pin(SIGNATURE).locked


def test_final_try_flag_follows_the_state_flag():
    state = given(enrolled(), failed(SIGNATURE, 3))
    assert state.pin(SIGNATURE).final_try is False
    state = given(enrolled(), failed(SIGNATURE, 4))
    assert state.pin(SIGNATURE).final_try is True
    assert when(state, verify(SIGNATURE, "ABC123")).outcome.final_try is False


@pytest.mark.parametrize("pin_type", ALL_TYPES)
@pytest.mark.parametrize("pin_kind", ["correct", "wrong"])
def test_a_locked_pin_is_never_checked(pin_type, pin_kind):
    state = given(enrolled(), *locked(pin_type))
    pin = (CORRECT if pin_kind == "correct" else WRONG)[pin_type]
    decision = when(state, verify(pin_type, pin), never_checked)
    assert decision.events == (LockedPinAttempted(pin_type, VERIFY),)
    assert decision.outcome.result is CheckResult.LOCKED
    assert decision.outcome.remaining_tries == 0
    assert decision.outcome.locked_now is False
    assert decision.outcome.final_try is False
    assert decision.outcome.recovery is not None


def test_attempts_on_a_locked_pin_emit_no_second_lock():
    state = given(enrolled(), *locked(USER))
    for _ in range(5):
        decision = when(state, verify(USER, CORRECT[USER]), never_checked)
        assert decision.events == (LockedPinAttempted(USER, VERIFY),)
        state = then(state, decision)
    assert state.pin(USER).locked
    assert state.pin(USER).consecutive_failures == 3


def test_a_correct_entry_resets_the_counter():
    # 2 failures, a success, 2 more failures: never 3 in a row, so not locked.
    state = given(enrolled(), *failures(USER, 2))
    ok = when(state, verify(USER, CORRECT[USER]))
    assert ok.events == (PinVerified(USER),)
    state = then(state, ok)
    assert state.pin(USER).consecutive_failures == 0

    for n in (1, 2):
        decision = when(state, verify(USER, WRONG[USER]))
        assert decision.events == (PinVerificationFailed(USER, VERIFY, n, 3 - n),)
        state = then(state, decision)
    assert not state.pin(USER).locked
    assert state.pin(USER).remaining_tries == 1


def test_time_never_resets_the_counter():
    # Failures spread over a long history (the helper spaces events apart,
    # and many successes of other PIN types come between) still lock.
    history = [enrolled()]
    for n in (1, 2):
        history.append(failed(USER, n))
        history.extend(PinVerified(t) for t in (RESIDENT, CARD_INFO, SIGNATURE) for _ in range(100))
    state = given(*history)
    decision = when(state, verify(USER, WRONG[USER]))
    assert decision.events == (PinVerificationFailed(USER, VERIFY, 3, 0), PinLocked(USER, 3))


def test_counters_are_per_pin_type_even_with_the_same_value():
    # The three 4-digit PINs all hold "1234"; the entry "9999" is wrong for each.
    state = given(enrolled(), *failures(USER, 2))
    assert CORRECT[USER] == CORRECT[RESIDENT] == CORRECT[CARD_INFO]

    decision = when(state, verify(RESIDENT, WRONG[RESIDENT]))
    assert decision.events == (PinVerificationFailed(RESIDENT, VERIFY, 1, 2),)
    state = then(state, decision)

    assert state.pin(USER).consecutive_failures == 2
    assert state.pin(RESIDENT).consecutive_failures == 1
    assert state.pin(CARD_INFO).consecutive_failures == 0


def test_locking_one_pin_type_leaves_the_others_working():
    state = given(enrolled(), *locked(USER))
    for pin_type in (RESIDENT, CARD_INFO, SIGNATURE):
        assert when(state, verify(pin_type, CORRECT[pin_type])).events == (PinVerified(pin_type),)


def test_a_success_of_another_type_does_not_reset_the_counter():
    state = given(enrolled(), *failures(USER, 2), PinVerified(RESIDENT), PinVerified(SIGNATURE))
    decision = when(state, verify(USER, WRONG[USER]))
    assert decision.events == (PinVerificationFailed(USER, VERIFY, 3, 0), PinLocked(USER, 3))


def test_matcher_is_asked_about_the_requested_type_and_normalized_pin():
    asked = []

    def spy(t, p):
        asked.append((t, p))
        return True

    when(given(enrolled()), verify(SIGNATURE, "abc123"), spy)
    assert asked == [(SIGNATURE, "ABC123")]


# --- change -----------------------------------------------------------------


@pytest.mark.parametrize("pin_type", ALL_TYPES)
def test_change_with_the_correct_current_pin(pin_type):
    new = {RESIDENT: "4321", CARD_INFO: "0000", USER: "5678", SIGNATURE: "newpin42"}[pin_type]
    state = given(enrolled())
    decision = when(state, change(pin_type, CORRECT[pin_type], new))
    assert decision.events == (PinChanged(pin_type),)
    assert decision.new_pins == {pin_type: new.upper()}
    assert decision.outcome.result is CheckResult.OK
    assert decision.outcome.remaining_tries == retry_limit(pin_type)


def test_change_resets_the_counter():
    state = given(enrolled(), *failures(SIGNATURE, 4))
    decision = when(state, change(SIGNATURE, CORRECT[SIGNATURE], "XYZ789"))
    assert decision.events == (PinChanged(SIGNATURE),)
    state = then(state, decision)
    assert state.pin(SIGNATURE).consecutive_failures == 0
    assert state.pin(SIGNATURE).remaining_tries == 5


def test_change_with_a_wrong_current_pin_is_a_failed_try():
    state = given(enrolled(), failed(USER, 1))
    decision = when(state, change(USER, WRONG[USER], "5678"))
    assert decision.events == (PinVerificationFailed(USER, CHANGE, 2, 1),)
    assert decision.outcome == CheckOutcome(CheckResult.WRONG_PIN, 1, True, 3)
    assert decision.new_pins == {}


def test_wrong_changes_count_towards_the_lock():
    state = given(enrolled(), failed(USER, 1), failed(USER, 2, CHANGE))
    decision = when(state, change(USER, WRONG[USER], "5678"))
    assert decision.events == (PinVerificationFailed(USER, CHANGE, 3, 0), PinLocked(USER, 3))
    assert decision.outcome.locked_now
    assert decision.new_pins == {}


def test_change_and_verify_failures_share_one_counter():
    state = given(enrolled(), failed(USER, 1, CHANGE), failed(USER, 2, CHANGE))
    decision = when(state, verify(USER, WRONG[USER]))
    assert decision.events == (PinVerificationFailed(USER, VERIFY, 3, 0), PinLocked(USER, 3))


def test_change_on_a_locked_pin_is_recorded_and_sets_nothing():
    state = given(enrolled(), *locked(SIGNATURE))
    decision = when(state, change(SIGNATURE, CORRECT[SIGNATURE], "XYZ789"), never_checked)
    assert decision.events == (LockedPinAttempted(SIGNATURE, CHANGE),)
    assert decision.outcome.result is CheckResult.LOCKED
    assert decision.new_pins == {}


# --- enroll, unknown card, unknown PIN type ----------------------------------


def test_enroll_a_new_card():
    cmd = enroll({USER: "1234", SIGNATURE: "abc123"})
    decision = when(CardState(CARD), cmd, never_checked)
    assert decision.events == (CardEnrolled((USER, SIGNATURE)),)
    assert decision.outcome == Enrolled(CARD, (USER, SIGNATURE))
    assert decision.new_pins == {USER: "1234", SIGNATURE: "ABC123"}
    state = then(CardState(CARD), decision)
    assert set(state.pins) == {USER, SIGNATURE}
    assert all(p.consecutive_failures == 0 and not p.locked for p in state.pins.values())


def test_enroll_twice_already_exists():
    state = given(enrolled(USER))
    with pytest.raises(AlreadyExists):
        when(state, enroll({SIGNATURE: "ABC123"}), never_checked)


@pytest.mark.parametrize("make", [lambda: verify(USER, "1234"), lambda: change(USER, "1234", "5678")])
def test_unknown_card_is_not_found(make):
    with pytest.raises(NotFound):
        when(CardState(CARD), make(), never_checked)


@pytest.mark.parametrize("make", [lambda: verify(SIGNATURE, "ABC123"), lambda: change(SIGNATURE, "ABC123", "XYZ789")])
def test_pin_type_never_enrolled_is_a_failed_precondition(make):
    state = given(enrolled(USER, RESIDENT))
    with pytest.raises(PreconditionFailed) as info:
        when(state, make(), never_checked)
    assert [v.type for v in info.value.violations] == ["PIN_NOT_SET"]


# --- the way out of a lock ----------------------------------------------------


@pytest.mark.parametrize("pin_type", FOUR_DIGIT_TYPES)
def test_a_locked_four_digit_pin_is_reset_at_a_counter(pin_type):
    state = given(enrolled(), *failures(pin_type, 2))
    locking = when(state, verify(pin_type, WRONG[pin_type]))
    assert locking.outcome.recovery.route is Route.COUNTER
    later = when(then(state, locking), verify(pin_type, CORRECT[pin_type]), never_checked)
    assert later.outcome.recovery.route is Route.COUNTER


def test_locked_signature_while_the_user_certificate_works_goes_to_the_store():
    state = given(enrolled(), *failures(SIGNATURE, 4), *failures(USER, 2))
    locking = when(state, verify(SIGNATURE, WRONG[SIGNATURE]))
    assert locking.outcome.recovery.route is Route.CONVENIENCE_STORE_OR_COUNTER
    later = when(then(state, locking), verify(SIGNATURE, CORRECT[SIGNATURE]), never_checked)
    assert later.outcome.recovery.route is Route.CONVENIENCE_STORE_OR_COUNTER


def test_locked_signature_with_the_user_certificate_locked_goes_to_a_counter():
    state = given(enrolled(), *locked(USER), *failures(SIGNATURE, 4))
    locking = when(state, verify(SIGNATURE, WRONG[SIGNATURE]))
    assert locking.outcome.recovery.route is Route.COUNTER
    later = when(then(state, locking), verify(SIGNATURE, CORRECT[SIGNATURE]), never_checked)
    assert later.outcome.recovery.route is Route.COUNTER


def test_locked_signature_without_a_user_certificate_goes_to_a_counter():
    state = given(enrolled(SIGNATURE, RESIDENT), *locked(SIGNATURE))
    decision = when(state, verify(SIGNATURE, CORRECT[SIGNATURE]), never_checked)
    assert decision.outcome.recovery.route is Route.COUNTER


def test_locking_the_user_certificate_moves_a_locked_signature_to_the_counter():
    state = given(enrolled(), *locked(SIGNATURE))
    assert when(state, verify(SIGNATURE, "ABC123"), never_checked).outcome.recovery.route is (Route.CONVENIENCE_STORE_OR_COUNTER)
    state = given(enrolled(), *locked(SIGNATURE), *locked(USER))
    assert when(state, verify(SIGNATURE, "ABC123"), never_checked).outcome.recovery.route is Route.COUNTER


# --- no PIN anywhere in events, outcomes or decisions -------------------------

SECRET_4 = "8642"
SECRET_SIG = "SECRETPIN7Q"
SECRETS = {RESIDENT: SECRET_4, CARD_INFO: SECRET_4, USER: SECRET_4, SIGNATURE: SECRET_SIG}


def _all_decisions():
    """A decision of every kind, made with the secret PINs as input."""
    new = {RESIDENT: "7531", CARD_INFO: "7531", USER: "7531", SIGNATURE: "NEWSECRET9Z"}
    out = [when(CardState(CARD), enroll(SECRETS), never_checked)]
    for t in ALL_TYPES:
        fresh = given(enrolled())
        almost = given(enrolled(), *failures(t, retry_limit(t) - 1))
        gone = given(enrolled(), *locked(t))
        out += [
            when(fresh, verify(t, SECRETS[t]), SECRETS),  # verified
            when(fresh, verify(t, SECRETS[t]), CORRECT),  # wrong
            when(almost, verify(t, SECRETS[t]), CORRECT),  # locks
            when(gone, verify(t, SECRETS[t]), never_checked),  # locked
            when(fresh, change(t, SECRETS[t], new[t]), SECRETS),  # changed
            when(fresh, change(t, SECRETS[t], new[t]), CORRECT),  # wrong current
            when(almost, change(t, SECRETS[t], new[t]), CORRECT),  # locks
            when(gone, change(t, SECRETS[t], new[t]), never_checked),  # locked
        ]
    return out


def test_no_event_payload_or_repr_ever_contains_a_pin():
    decisions = _all_decisions()
    kinds = {type(e) for d in decisions for e in d.events}
    assert kinds == {CardEnrolled, PinVerified, PinVerificationFailed, PinLocked, LockedPinAttempted, PinChanged}
    for decision in decisions:
        texts = [repr(decision), repr(decision.outcome)]
        for event in decision.events:
            texts += [repr(event), json.dumps(event.payload(), default=str)]
        for text in texts:
            for secret in (SECRET_4, SECRET_SIG, "7531", "NEWSECRET9Z"):
                assert secret.lower() not in text.lower(), text


def test_payload_keeps_pin_type_out_and_is_json():
    event = PinVerificationFailed(USER, CHANGE, 2, 1)
    assert event.payload() == {"purpose": "change", "consecutive_failures": 2, "remaining_tries": 1}
    assert CardEnrolled((USER, SIGNATURE)).payload() == {"pin_types": ["user_certificate", "signature"], "ward": None}


def test_domain_errors_never_contain_a_pin():
    messages = []
    for state, cmd in [
        (CardState(CARD), verify(USER, SECRET_4)),
        (given(enrolled(USER)), change(SIGNATURE, SECRET_SIG, "NEWSECRET9Z")),
        (given(enrolled(USER)), enroll({USER: SECRET_4})),
    ]:
        with pytest.raises(DomainError) as info:
            when(state, cmd, never_checked)
        messages.append(str(info.value) + repr(info.value))
    for text in messages:
        assert SECRET_4 not in text and SECRET_SIG.lower() not in text.lower()


# --- property: any sequence of attempts ----------------------------------------

attempt = st.tuples(
    st.sampled_from(ALL_TYPES),
    st.booleans(),  # correct?
    st.sampled_from(["verify", "change"]),
)


@settings(max_examples=200, deadline=None)
@hgiven(attempts=st.lists(attempt, max_size=40))
def test_any_sequence_of_attempts_follows_the_rules(attempts):
    """A reference model (a counter per type) against decide + evolve."""
    state = given(enrolled())
    model_failures = {t: 0 for t in ALL_TYPES}
    model_locked = {t: False for t in ALL_TYPES}
    locks_emitted = {t: 0 for t in ALL_TYPES}
    stream = []

    for pin_type, correct, kind in attempts:
        limit = retry_limit(pin_type)
        pin = CORRECT[pin_type] if correct else WRONG[pin_type]
        cmd = verify(pin_type, pin) if kind == "verify" else change(pin_type, pin, CORRECT[pin_type])
        before = state
        decision = when(state, cmd, never_checked if model_locked[pin_type] else CORRECT)
        state = then(state, decision)
        stream += decision.events
        outcome = decision.outcome

        # The reference model.
        if model_locked[pin_type]:
            expected_result = CheckResult.LOCKED
        elif correct:
            model_failures[pin_type] = 0
            expected_result = CheckResult.OK
        else:
            model_failures[pin_type] += 1
            if model_failures[pin_type] == limit:
                model_locked[pin_type] = True
                expected_result = CheckResult.LOCKED
            else:
                expected_result = CheckResult.WRONG_PIN

        locks_emitted[pin_type] += sum(isinstance(e, PinLocked) for e in decision.events)
        assert outcome.result is expected_result
        assert locks_emitted[pin_type] == (1 if model_locked[pin_type] else 0)
        # Only the PIN type entered changed.
        for other in ALL_TYPES:
            if other is not pin_type:
                assert state.pin(other) == before.pin(other)
        # Counters never exceed the limit and match the model.
        pin_state = state.pin(pin_type)
        assert 0 <= pin_state.consecutive_failures <= limit
        assert pin_state.consecutive_failures == model_failures[pin_type]
        assert pin_state.locked == model_locked[pin_type]
        # What the caller was told is what the events, folded, say.
        assert outcome.remaining_tries == pin_state.remaining_tries
        assert outcome.final_try == pin_state.final_try
        assert outcome.retry_limit == limit
        assert outcome.locked_now == any(isinstance(e, PinLocked) for e in decision.events)
        # New verifiers only for a successful change.
        expected_new = {pin_type: CORRECT[pin_type]} if kind == "change" and expected_result is CheckResult.OK else {}
        assert decision.new_pins == expected_new

    # The whole stream replayed from scratch equals the step-by-step state.
    assert given(enrolled(), *stream) == state


@settings(max_examples=200, deadline=None)
@hgiven(outcomes=st.lists(st.booleans(), max_size=30), pin_type=st.sampled_from(ALL_TYPES))
def test_one_pin_type_never_more_wrong_tries_than_the_limit(outcomes, pin_type):
    """Correct/wrong verifies of one PIN: the failures counted never exceed
    the limit, and exactly one PinLocked appears once the limit is reached."""
    limit = retry_limit(pin_type)
    state = given(enrolled())
    stream = []
    checked_wrong_in_a_row = 0
    reached = False
    for correct in outcomes:
        pin = CORRECT[pin_type] if correct else WRONG[pin_type]
        decision = when(state, verify(pin_type, pin), never_checked if reached else CORRECT)
        stream += decision.events
        state = then(state, decision)
        if not reached:
            checked_wrong_in_a_row = 0 if correct else checked_wrong_in_a_row + 1
            reached = checked_wrong_in_a_row == limit
        assert state.pin(pin_type).consecutive_failures <= limit
        assert decision.outcome.remaining_tries == state.pin(pin_type).remaining_tries

    assert sum(isinstance(e, PinLocked) for e in stream) == (1 if reached else 0)
    assert state.pin(pin_type).locked == reached
    if reached:
        # Nothing was checked after the lock, and the lock follows its failure.
        i = next(i for i, e in enumerate(stream) if isinstance(e, PinLocked))
        assert stream[i - 1] == PinVerificationFailed(pin_type, VERIFY, limit, 0)
        assert all(isinstance(e, LockedPinAttempted) for e in stream[i + 1 :])
    assert given(enrolled(), *stream) == state
