"""decide: given a card's state, a command, the time and the policy, which
events happen and what the caller is told. Pure (decision.py: the time and
the policy are arguments, the PIN check is passed in as a function).

This module holds the rules of enrolment, verify and change, and assembles
DECIDERS, the one table of every card command's rule: these here and the
reset procedures' (procedures.py). What the deciders share (Decision,
Context, check_pin, the enrolled / PIN-set requirements) is in decision.py;
each rule the lawful-history check (lawful.py) judges by as well is a guard
in guards.py, which both sides call. Imports run one way: this module
imports procedures.py and decision.py; neither imports it.

- decide_enroll: a card is enrolled once.
- decide_verify: check_pin (decision.py).
- decide_change: only when the current PIN is known; a wrong current PIN is
  a failed try of that PIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from service.domain import procedures
from service.domain.commands import (
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
from service.domain.decision import CheckOutcome, CheckResult, Context, Decision, check_pin
from service.domain.errors import AlreadyExists
from service.domain.events import CardEnrolled, PinChanged, Purpose
from service.domain.pins import PinType
from service.domain.state import CardState


@dataclass(frozen=True)
class Enrolled:
    card_id: str
    pin_types: tuple[PinType, ...]


Outcome = CheckOutcome | Enrolled


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
    ResetPin: procedures.decide_reset,
    UnlockPin: procedures.decide_unlock,
    SuspendCard: procedures.decide_suspend,
    ResumeCard: procedures.decide_resume,
    RequestProxyReset: procedures.decide_request_proxy,
    CompleteProxyReset: procedures.decide_complete_proxy,
    ReserveStoreReset: procedures.decide_reserve_store,
    StoreResetPin: procedures.decide_store_reset,
}


def decide(state: CardState, cmd: Any, ctx: Context) -> Decision:
    return DECIDERS[type(cmd)](state, cmd, ctx)
