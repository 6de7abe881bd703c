"""decide: given a card's state, a command, the time and the policy, which
events happen and what the caller is told. Pure (decision.py: the time and
the policy are arguments, the PIN check is passed in as a function).

This module holds the rules of enrolment, verify and change, and `decide`,
which picks each card command's rule: these here and the reset procedures'
(procedures.py), one case each. What the deciders share (Decision,
Context, check_pin, the enrolled / PIN-set requirements) is in decision.py;
each rule the lawful-history check (lawful.py) judges by as well is a guard
in guards.py, which both sides call. Imports run one way: this module
imports procedures.py and decision.py; neither imports it.

- decide_enroll: a card is enrolled once, with a ward an office serves
  (require_served_ward).
- decide_verify: check_pin (decision.py).
- decide_change: only when the current PIN is known; a wrong current PIN is
  a failed try of that PIN.
"""

from __future__ import annotations

from typing import assert_never

from . import guards, procedures
from .commands import (
    CardCommand,
    ChangePin,
    CompleteProxyReset,
    EnrollCard,
    RequestProxyReset,
    ReserveStoreReset,
    ResetPin,
    ResumeCard,
    StoreResetPin,
    SuspendCard,
    UnlockPin,
    VerifyPin,
)
from .decision import Context, Decision, check_pin, counter_gate
from .errors import AlreadyExists, FieldViolation, InvalidInput
from .events import CardEnrolled, PinChanged, Purpose
from .outcomes import CheckOutcome, CheckResult, Enrolled, Outcome
from .policy import Policy
from .state import CardState


def require_served_ward(ward: str | None, policy: Policy) -> None:
    """An enrolment's ward is one an office serves (guards.ward_served), else
    INVALID_ARGUMENT naming `ward`: checked before anything else is decided."""
    if not guards.ward_served(policy, ward):
        known = sorted({w for office in policy.calendar.offices.values() for w in office.wards})
        shown = ", ".join(known[:30]) + (f" and {len(known) - 30} more" if len(known) > 30 else "")
        raise InvalidInput(
            FieldViolation(
                "ward", f"{ward!r} is served by no office; the known wards come from the offices file: {shown or 'none'}"
            )
        )


def decide_enroll(state: CardState, cmd: EnrollCard, ctx: Context) -> Decision[Enrolled]:
    if state.enrolled:
        raise AlreadyExists(f"card {cmd.card_id} is already enrolled")
    pin_types = tuple(cmd.pins)
    return Decision((CardEnrolled(pin_types, cmd.ward),), Enrolled(cmd.card_id, pin_types), dict(cmd.pins))


def decide_verify(state: CardState, cmd: VerifyPin, ctx: Context) -> Decision[CheckOutcome]:
    events, outcome = check_pin(state, cmd.pin_type, cmd.pin, Purpose.VERIFY, ctx)
    return Decision(events, outcome)


def decide_change(state: CardState, cmd: ChangePin, ctx: Context) -> Decision[CheckOutcome]:
    """Only when the current PIN is known; a wrong one is a failed try."""
    events, outcome = check_pin(state, cmd.pin_type, cmd.current_pin, Purpose.CHANGE, ctx)
    if outcome.result is not CheckResult.OK:
        return Decision(events, outcome)
    return Decision((PinChanged(cmd.pin_type),), outcome, {cmd.pin_type: cmd.new_pin})


def decide(state: CardState, cmd: CardCommand, ctx: Context) -> Decision[Outcome]:
    """The rule of each card command, one case each (a command added to
    CardCommand without its case here fails the type check). A command a
    counter sends (it names the counter's office) is gated first, whichever
    it is (decision.counter_gate): the rule runs only in the office's hours,
    for a card of a ward the office serves."""
    if isinstance(cmd, EnrollCard):
        require_served_ward(cmd.ward, ctx.policy)
    if (office_id := getattr(cmd, "office_id", None)) is not None:
        ward = cmd.ward if isinstance(cmd, EnrollCard) else state.ward
        if gate := counter_gate(cmd.card_id, ward, office_id, type(cmd).__name__, ctx.policy, ctx.now):
            return gate
    match cmd:
        case VerifyPin():
            return decide_verify(state, cmd, ctx)
        case ChangePin():
            return decide_change(state, cmd, ctx)
        case EnrollCard():
            return decide_enroll(state, cmd, ctx)
        case ResetPin():
            return procedures.decide_reset(state, cmd, ctx)
        case UnlockPin():
            return procedures.decide_unlock(state, cmd, ctx)
        case SuspendCard():
            return procedures.decide_suspend(state, cmd, ctx)
        case ResumeCard():
            return procedures.decide_resume(state, cmd, ctx)
        case RequestProxyReset():
            return procedures.decide_request_proxy(state, cmd, ctx)
        case CompleteProxyReset():
            return procedures.decide_complete_proxy(state, cmd, ctx)
        case ReserveStoreReset():
            return procedures.decide_reserve_store(state, cmd, ctx)
        case StoreResetPin():
            return procedures.decide_store_reset(state, cmd, ctx)
        case _:
            assert_never(cmd)
