"""evolve / fold: the lock-state projection as a fold of a card's events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pinlife.domain.events import (
    CardEnrolled,
    LockedPinAttempted,
    PinChanged,
    PinLocked,
    PinVerified,
    Purpose,
    Recorded,
)
from pinlife.domain.state import CardState, PinState, evolve, fold
from pinlife.domain.upcasting import event_from_stored
from tests.unit.helpers import (
    ALL_TYPES,
    CARD,
    SIGNATURE,
    USER,
    at,
    enrolled,
    failed,
    failures,
    given,
)


def test_an_empty_stream_is_a_card_that_is_not_enrolled():
    state = fold(CARD, [])
    assert state == CardState(CARD)
    assert not state.enrolled
    assert state.pin(USER) is None


def test_enrolment_sets_fresh_pins():
    state = given(CardEnrolled((USER, SIGNATURE)))
    assert state.enrolled and state.version == 1
    assert state.pins == {USER: PinState(USER, last_version=1), SIGNATURE: PinState(SIGNATURE, last_version=1)}
    assert state.pin(USER).remaining_tries == 3
    assert state.pin(SIGNATURE).remaining_tries == 5


@pytest.mark.parametrize(
    "versions",
    [
        [2],  # does not start at 1
        [0],
        [1, 3],  # a gap
        [1, 1],  # a repeat
        [1, 2, 2],
        [2, 1],  # out of order
    ],
)
def test_versions_must_be_consecutive(versions):
    events = [enrolled(), PinVerified(USER), PinVerified(USER)]
    history = [Recorded(events[i], v, at(v)) for i, v in enumerate(versions)]
    with pytest.raises(ValueError):
        fold(CARD, history)


def test_evolve_refuses_a_version_that_does_not_follow():
    state = given(enrolled(), PinVerified(USER))
    with pytest.raises(ValueError):
        evolve(state, Recorded(PinVerified(USER), 4, at(4)))
    assert evolve(state, Recorded(PinVerified(USER), 3, at(3))).version == 3


def test_locked_at_comes_from_the_lock_event():
    t_fail = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
    t_lock = t_fail + timedelta(milliseconds=3)
    history = [
        Recorded(enrolled(), 1, t_fail - timedelta(days=30)),
        *[Recorded(e, v, t_fail - timedelta(hours=5 - v)) for v, e in enumerate(failures(USER, 2), start=2)],
        Recorded(failed(USER, 3), 4, t_fail),
        Recorded(PinLocked(USER, 3), 5, t_lock),
        Recorded(LockedPinAttempted(USER, Purpose.VERIFY), 6, t_lock + timedelta(days=1)),
    ]
    state = fold(CARD, history)
    pin = state.pin(USER)
    assert pin.locked
    assert pin.locked_at == t_lock
    assert pin.remaining_tries == 0
    assert pin.consecutive_failures == 3
    assert pin.last_version == 5  # a locked attempt changes no PIN state
    assert state.version == 6


def test_a_failure_sets_the_counter_and_remaining_tries():
    state = given(enrolled(), *failures(SIGNATURE, 4))
    pin = state.pin(SIGNATURE)
    assert (pin.consecutive_failures, pin.remaining_tries, pin.final_try, pin.locked) == (4, 1, True, False)
    assert pin.last_version == 5
    assert state.pin(USER) == PinState(USER, last_version=1)


@pytest.mark.parametrize("reset", [PinVerified(USER), PinChanged(USER)])
def test_a_success_or_a_change_resets_the_counter(reset):
    state = given(enrolled(), *failures(USER, 2), reset)
    assert state.pin(USER) == PinState(USER, consecutive_failures=0, last_version=4)
    assert state.pin(USER).remaining_tries == 3


def test_a_locked_attempt_changes_nothing_but_the_version():
    before = given(enrolled(), *failures(USER, 3), PinLocked(USER, 3))
    after = given(enrolled(), *failures(USER, 3), PinLocked(USER, 3), LockedPinAttempted(USER, Purpose.CHANGE))
    assert after.pins == before.pins
    assert after.version == before.version + 1


def test_pins_are_independent():
    state = given(enrolled(), *failures(USER, 3), PinLocked(USER, 3), failed(SIGNATURE, 1))
    assert state.pin(USER).locked
    for t in ALL_TYPES:
        if t not in (USER, SIGNATURE):
            assert state.pin(t).consecutive_failures == 0 and not state.pin(t).locked
    assert state.pin(SIGNATURE).consecutive_failures == 1


def test_stored_form_round_trips():
    events = [
        enrolled(),
        failed(USER, 1),
        failed(SIGNATURE, 2, Purpose.CHANGE),
        PinLocked(USER, 3),
        LockedPinAttempted(USER, Purpose.CHANGE),
        PinVerified(SIGNATURE),
        PinChanged(SIGNATURE),
    ]
    for event in events:
        pin_type = getattr(event, "pin_type", None)
        rebuilt = event_from_stored(event.type_name, event.schema_version, pin_type.value if pin_type else None, event.payload())
        assert rebuilt == event
