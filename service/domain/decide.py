"""decide: given a card's state, a command, the time and the policy, which
events happen and what the caller is told. Pure: the time and the policy are
arguments and the PIN check is passed in as a function, so the rules never
see a verifier, a key, a database or a clock.

The rules of DESIGN.md §2 for verify and change live here, each in one place:
- check_pin: locked PINs are never checked; a correct entry resets the
  counter; a wrong one counts; reaching the limit locks (failure, then lock).
- decide_change: a wrong current PIN is a failed try of that PIN.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from collections.abc import Callable, Mapping

from service.domain.commands import ChangePin, EnrollCard, VerifyPin
from service.domain.errors import AlreadyExists, DomainError, NotFound, PreconditionFailed, PreconditionViolation
from service.domain.events import (
    CardEnrolled,
    Event,
    LockedPinAttempted,
    PinChanged,
    PinLocked,
    PinVerificationFailed,
    PinVerified,
    Purpose,
    SuspendedCardAttempted,
)
from service.domain.pins import PinType, retry_limit
from service.domain.policy import Policy
from service.domain.recovery import Recovery, recovery_for
from service.domain.state import EMPTY, CardState

# (pin_type, normalized pin) -> does it match the stored verifier?
PinMatcher = Callable[[PinType, str], bool]


class CheckResult(enum.Enum):
    OK = "ok"
    WRONG_PIN = "wrong_pin"
    LOCKED = "locked"
    CARD_SUSPENDED = "card_suspended"


@dataclass(frozen=True)
class CheckOutcome:
    result: CheckResult
    remaining_tries: int
    final_try: bool
    retry_limit: int
    locked_now: bool = False
    recovery: Recovery | None = None


@dataclass(frozen=True)
class Enrolled:
    card_id: str
    pin_types: tuple[PinType, ...]


Outcome = CheckOutcome | Enrolled


@dataclass(frozen=True)
class Decision:
    events: tuple[Event, ...]  # for the card's stream
    outcome: Any  # the answer (None with an error)
    # PINs to store as new verifiers in the same transaction (never in events).
    new_pins: Mapping[PinType, str] = field(default_factory=lambda: EMPTY, repr=False)
    # Other secrets of the card, by (kind, name): stored only as keyed hashes.
    new_secrets: Mapping[tuple[str, str], str] = field(default_factory=lambda: EMPTY, repr=False)
    terminal_events: tuple[Event, ...] = ()  # for the calling terminal's stream (refusals)
    error: DomainError | None = None  # the events are recorded, then the caller gets this error


def _require_pin(state: CardState, pin_type: PinType):
    if not state.enrolled:
        raise NotFound(f"card {state.card_id} is not enrolled")
    pin = state.pin(pin_type)
    if pin is None:
        raise PreconditionFailed(
            PreconditionViolation("PIN_NOT_SET", f"{state.card_id}/{pin_type.value}", "this PIN type was never set on the card")
        )
    return pin


class Context(NamedTuple):
    """What a rule may consult besides the card's state and the command."""

    now: datetime
    policy: Policy
    matches: PinMatcher
    # (secret kind, name, value) -> does it match the stored keyed hash?
    code_matches: Callable[[str, str, str], bool] = lambda kind, name, value: False
    new_id: Callable[[], str] = lambda: ""  # a fresh unique id (inquiries, reservations)
    new_code: Callable[[], str] = lambda: ""  # a fresh one-time code (8 digits)

    def recovery(self, state: CardState, pin_type: PinType) -> Recovery:
        return recovery_for(state, pin_type, self.policy, self.now)


def check_pin(
    state: CardState, pin_type: PinType, pin: str, purpose: Purpose, ctx: Context
) -> tuple[tuple[Event, ...], CheckOutcome]:
    current = _require_pin(state, pin_type)
    limit = retry_limit(pin_type)
    if state.suspended:
        outcome = CheckOutcome(CheckResult.CARD_SUSPENDED, current.remaining_tries, current.final_try, limit,
                               recovery=ctx.recovery(state, pin_type))  # fmt: skip
        return (SuspendedCardAttempted(pin_type, purpose),), outcome
    if current.locked:
        outcome = CheckOutcome(CheckResult.LOCKED, 0, False, limit, recovery=ctx.recovery(state, pin_type))
        return (LockedPinAttempted(pin_type, purpose),), outcome
    if ctx.matches(pin_type, pin):
        return (PinVerified(pin_type),), CheckOutcome(CheckResult.OK, limit, limit == 1, limit)
    failures = current.consecutive_failures + 1
    remaining = limit - failures
    failed = PinVerificationFailed(pin_type, purpose, failures, remaining)
    if remaining > 0:
        return (failed,), CheckOutcome(CheckResult.WRONG_PIN, remaining, remaining == 1, limit)
    # The attempt that locks is recorded as a failure and then a lock.
    locked_state = state.with_pin(current.__class__(pin_type, failures, locked=True))
    outcome = CheckOutcome(CheckResult.LOCKED, 0, False, limit, locked_now=True, recovery=ctx.recovery(locked_state, pin_type))
    return (failed, PinLocked(pin_type, failures)), outcome


def decide_enroll(state: CardState, cmd: EnrollCard, ctx: Context) -> Decision:
    if state.enrolled:
        raise AlreadyExists(f"card {cmd.card_id} is already enrolled")
    pin_types = tuple(cmd.pins)
    return Decision((CardEnrolled(pin_types, cmd.ward),), Enrolled(cmd.card_id, pin_types), dict(cmd.pins))


def decide_verify(state: CardState, cmd: VerifyPin, ctx: Context) -> Decision:
    events, outcome = check_pin(state, cmd.pin_type, cmd.pin, Purpose.VERIFY, ctx)
    return Decision(events, outcome)


def decide_change(state: CardState, cmd: ChangePin, ctx: Context) -> Decision:
    """Only when the current PIN is known; a wrong one is a failed try."""
    events, outcome = check_pin(state, cmd.pin_type, cmd.current_pin, Purpose.CHANGE, ctx)
    if outcome.result is not CheckResult.OK:
        return Decision(events, outcome)
    return Decision((PinChanged(cmd.pin_type),), outcome, {cmd.pin_type: cmd.new_pin})


# One entry per card command: a new command is one rule function and one line here.
DECIDERS: dict[type, Callable[[CardState, Any, Context], Decision]] = {
    EnrollCard: decide_enroll,
    VerifyPin: decide_verify,
    ChangePin: decide_change,
}


def decide(state: CardState, cmd: Any, ctx: Context) -> Decision:
    return DECIDERS[type(cmd)](state, cmd, ctx)


# The procedures' rules build on check_pin and the types above.
from service.domain.procedures import DECIDERS as _PROCEDURES  # noqa: E402

DECIDERS.update(_PROCEDURES)
