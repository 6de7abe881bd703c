"""Given-events / when-command / then-events helpers for the pure domain.

    state = given(CardEnrolled((PinType.USER_CERTIFICATE,)), failed(USER, 1))
    decision = when(state, verify(USER, "1234"), {USER: "1234"})
    assert decision.events == (PinVerified(USER),)

Imported as ``tests.unit.helpers`` (not ``helpers``) so that it cannot clash
with a helpers module of another test directory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pinlife.domain.commands import ChangePin, EnrollCard, VerifyPin
from pinlife.domain.decide import decide
from pinlife.domain.decision import Context, Decision, PinMatcher
from pinlife.domain.events import (
    CardEnrolled,
    Event,
    PinVerificationFailed,
    Purpose,
    Recorded,
)
from pinlife.domain.pins import PinType, retry_limit
from pinlife.domain.policy import Policy
from pinlife.domain.state import CardState, evolve, fold

CARD = "card-0001"
T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)

RESIDENT = PinType.RESIDENT_REGISTRY
CARD_INFO = PinType.CARD_INFO_INPUT_SUPPORT
USER = PinType.USER_CERTIFICATE
SIGNATURE = PinType.SIGNATURE
FOUR_DIGIT_TYPES = (RESIDENT, CARD_INFO, USER)
ALL_TYPES = (RESIDENT, CARD_INFO, USER, SIGNATURE)

# Correct PINs of a fully enrolled card. The three 4-digit PINs share a value
# on purpose: they must still count separately.
CORRECT = {RESIDENT: "1234", CARD_INFO: "1234", USER: "1234", SIGNATURE: "ABC123"}
WRONG = {RESIDENT: "9999", CARD_INFO: "9999", USER: "9999", SIGNATURE: "ZZZ999"}

_request_counter = 0


def request_id() -> str:
    global _request_counter
    _request_counter += 1
    return f"req-{_request_counter:08d}"


def at(version: int) -> datetime:
    """The occurred-at given() uses for the event of that version."""
    return T0 + timedelta(minutes=version)


def recorded(events: tuple[Event, ...] | list[Event], first_version: int = 1) -> list[Recorded]:
    return [Recorded(e, v, at(v)) for v, e in enumerate(events, start=first_version)]


def given(*events: Event, card_id: str = CARD) -> CardState:
    """The state of a card whose stream holds these events, in order."""
    return fold(card_id, recorded(events))


def enrolled(*pin_types: PinType) -> CardEnrolled:
    return CardEnrolled(tuple(pin_types or ALL_TYPES))


def failed(pin_type: PinType, n: int, purpose: Purpose = Purpose.VERIFY) -> PinVerificationFailed:
    """The n-th consecutive failure of a PIN type, as decide records it."""
    return PinVerificationFailed(pin_type, purpose, n, retry_limit(pin_type) - n)


def failures(pin_type: PinType, count: int, start: int = 1) -> list[PinVerificationFailed]:
    return [failed(pin_type, n) for n in range(start, start + count)]


def matcher(correct_pins: dict[PinType, str]) -> PinMatcher:
    return lambda t, p: correct_pins.get(t) == p


def never_checked(t: PinType, p: str) -> bool:
    raise AssertionError(f"the {t.value} PIN must not be checked")


NOW = T0 + timedelta(days=1)  # the time when() decides at, after any given() event


def when(
    state: CardState,
    command: EnrollCard | VerifyPin | ChangePin,
    correct_pins: dict[PinType, str] | Callable[[PinType, str], bool] = CORRECT,
    *,
    now: datetime = NOW,
    policy: Policy = Policy(),
    **ctx,
) -> Decision:
    """decide() at `now` under `policy`, with a matcher that knows the
    correct PINs (or a given matcher)."""
    matches = correct_pins if callable(correct_pins) else matcher(correct_pins)
    return decide(state, command, Context(now, policy, matches, **ctx))


def then(state: CardState, decision: Decision, now: datetime | None = None) -> CardState:
    """The state after appending the decision's events to the stream (at
    `now`, the instant decided at, or at(version))."""
    for event in decision.events:
        v = state.version + 1
        state = evolve(state, Recorded(event, v, at(v) if now is None else now))
    return state


def verify(pin_type: PinType, pin: str, card_id: str = CARD) -> VerifyPin:
    return VerifyPin.create(request_id(), card_id, pin_type, pin)


def change(pin_type: PinType, current_pin: str, new_pin: str, card_id: str = CARD) -> ChangePin:
    return ChangePin.create(request_id(), card_id, pin_type, current_pin, new_pin)


def enroll(pins: dict[PinType, str], card_id: str = CARD) -> EnrollCard:
    return EnrollCard.create(request_id(), card_id, list(pins.items()))
