"""What every decider shares: the shape of a decision (Decision), what a
rule may consult (Context), the PIN check (check_pin) and its answer
(CheckOutcome), and the requirements that a card is enrolled and a PIN set.

The deciders use it: decide.py (enrol, verify, change) and procedures.py
(the reset procedures); decide.py picks each command's. Pure: the time
and the policy are arguments and the PIN check is passed in as a function,
so the rules never see a verifier, a key, a database or a clock. Each rule
the lawful-history check judges by as well (a locked PIN or a suspended
card is never checked, a wrong entry adds one failure, the limit locks, a
PIN must be set) is a guard in guards.py, called here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, NamedTuple, NoReturn, TypeVar

from . import guards
from .calendar import TOKYO
from .errors import DomainError, NotFound, PreconditionFailed, PreconditionViolation
from .events import (
    CounterOutOfService,
    Event,
    LockedPinAttempted,
    PinLocked,
    PinVerificationFailed,
    PinVerified,
    Purpose,
    RefusalReason,
    SuspendedCardAttempted,
)
from .outcomes import CheckOutcome, CheckResult
from .pins import PinType, retry_limit
from .policy import Policy
from .recovery import Recovery, recovery_for
from .state import EMPTY, CardState, PinState

# (pin_type, normalized pin) -> does it match the stored verifier?
PinMatcher = Callable[[PinType, str], bool]


Out = TypeVar("Out", covariant=True)  # the outcome a decider answers with (outcomes.py)


@dataclass(frozen=True)
class Decision(Generic[Out]):
    """What a decider decides: the events, and the answer (None with an error)."""

    events: tuple[Event, ...]  # for the card's stream
    outcome: Out | None
    # PINs to store as new verifiers in the same transaction (never in events).
    new_pins: Mapping[PinType, str] = field(default_factory=lambda: EMPTY, repr=False)
    # Other secrets of the card, by (kind, name): stored only as keyed hashes.
    new_secrets: Mapping[tuple[str, str], str] = field(default_factory=lambda: EMPTY, repr=False)
    terminal_events: tuple[Event, ...] = ()  # for the calling terminal's stream (refusals)
    error: DomainError | None = None  # the events are recorded, then the caller gets this error

    def answer(self) -> Out:
        """The outcome of a decision that ended without an error."""
        if self.outcome is None:
            raise AssertionError(f"a decision without an error has an outcome: {self!r}")
        return self.outcome


Refusal = Decision[NoReturn]  # a recorded refusal: no outcome, an error


class Context(NamedTuple):
    """What a rule may consult besides the card's state and the command."""

    now: datetime
    policy: Policy
    matches: PinMatcher
    # (secret kind, name, value) -> does it match the stored keyed hash?
    code_matches: Callable[[str, str, str], bool] = lambda kind, name, value: False
    new_id: Callable[[], str] = lambda: ""  # a fresh unique id (inquiries, reservations)
    new_code: Callable[[], str] = lambda: ""  # a fresh one-time code (8 digits)
    # the calling terminal's suspensions within the suspension window (throttle.TerminalWindow)
    suspensions: tuple[datetime, ...] = ()

    def recovery(self, state: CardState, pin_type: PinType) -> Recovery:
        return recovery_for(state, pin_type, self.policy, self.now)


def counter_gate(
    card_id: str, ward: str | None, office_id: str | None, rpc: str, policy: Policy, now: datetime
) -> Refusal | None:
    """A counter acts only in its office's hours and for cards of the wards
    its office serves (guards.counter_refusal), whatever it asks: a verify, a
    change, a status read, an enrolment or a procedure. The refusal is
    recorded on the terminal's stream (CounterOutOfService), names the next
    opening or the offices that serve the ward, and nothing about the card is
    checked: no try is spent. None: it may act (or the caller is no counter)."""
    reason = guards.counter_refusal(policy, office_id, ward, now)
    if reason is None or office_id is None:
        return None
    calendar = policy.calendar
    office = calendar.offices.get(office_id)
    if office is None:
        message = f"office {office_id} is not in the office calendar"
    elif reason is RefusalReason.OUT_OF_HOURS:
        opens = calendar.next_opening(office, now)
        when = opens.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M") if opens else "not within two months"
        message = f"{office.name} is closed now; it next opens {when} (Asia/Tokyo)"
    else:
        serving = ", ".join(o.name for o in calendar.serving(ward)) or "no configured office"
        message = f"{office.name} does not serve ward {ward}; it is served by {serving}"
    violation = PreconditionViolation(reason.violation_type, f"offices/{office_id}", message)
    refusal = CounterOutOfService(rpc, card_id, reason)
    return Decision((), None, terminal_events=(refusal,), error=PreconditionFailed(violation))


def require_enrolled(state: CardState) -> None:
    """An unknown card is NotFound."""
    if not state.enrolled:
        raise NotFound(f"card {state.card_id} is not enrolled")


def require_pin(state: CardState, pin_type: PinType) -> PinState:
    """The card is enrolled and this PIN type was set on it (else NotFound / PIN_NOT_SET)."""
    require_enrolled(state)
    if not guards.pin_set(state, pin_type):
        raise PreconditionFailed(
            PreconditionViolation("PIN_NOT_SET", f"{state.card_id}/{pin_type.value}", "this PIN type was never set on the card")
        )
    return state.pins[pin_type]


def check_pin(
    state: CardState, pin_type: PinType, pin: str, purpose: Purpose, ctx: Context
) -> tuple[tuple[Event, ...], CheckOutcome]:
    """A suspended card or a locked PIN is never checked: the attempt is
    recorded (guards.why_unchecked). A correct entry resets the counter; a
    wrong one counts (guards.wrong_entry); reaching the limit locks: the
    failure, then the lock (guards.locks)."""
    current = require_pin(state, pin_type)
    limit = retry_limit(pin_type)
    unchecked = guards.why_unchecked(state, pin_type)
    if unchecked is guards.Unchecked.CARD_SUSPENDED:
        outcome = CheckOutcome(
            CheckResult.CARD_SUSPENDED, current.remaining_tries, current.final_try, limit, recovery=ctx.recovery(state, pin_type)
        )
        return (SuspendedCardAttempted(pin_type, purpose),), outcome
    if unchecked is guards.Unchecked.PIN_LOCKED:
        outcome = CheckOutcome(CheckResult.LOCKED, 0, False, limit, recovery=ctx.recovery(state, pin_type))
        return (LockedPinAttempted(pin_type, purpose),), outcome
    if ctx.matches(pin_type, pin):
        return (PinVerified(pin_type),), CheckOutcome(CheckResult.OK, limit, limit == 1, limit)
    failures, remaining = guards.wrong_entry(current)
    failed = PinVerificationFailed(pin_type, purpose, failures, remaining)
    if not guards.locks(pin_type, failures):
        return (failed,), CheckOutcome(CheckResult.WRONG_PIN, remaining, remaining == 1, limit)
    locked_state = state.with_pin(PinState(pin_type, failures, locked=True))
    outcome = CheckOutcome(CheckResult.LOCKED, 0, False, limit, locked_now=True, recovery=ctx.recovery(locked_state, pin_type))
    return (failed, PinLocked(pin_type, failures)), outcome
