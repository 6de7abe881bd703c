"""State of a card and its PINs, and evolve: the fold of a card's events.

The lock-state projection (service/store) is exactly this fold, kept up to
date in the append transaction; a rebuild from the events must equal it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import singledispatch
from typing import Iterable

from service.domain.events import (
    CardEnrolled,
    Event,
    LockedPinAttempted,
    PinChanged,
    PinLocked,
    PinVerificationFailed,
    PinVerified,
    Recorded,
)
from service.domain.pins import PinType, retry_limit


@dataclass(frozen=True)
class PinState:
    pin_type: PinType
    consecutive_failures: int = 0
    locked: bool = False
    locked_at: datetime | None = None
    last_version: int = 0

    @property
    def retry_limit(self) -> int:
        return retry_limit(self.pin_type)

    @property
    def remaining_tries(self) -> int:
        return 0 if self.locked else self.retry_limit - self.consecutive_failures

    @property
    def final_try(self) -> bool:
        """The next wrong try locks the PIN."""
        return not self.locked and self.remaining_tries == 1


class CardStatus(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # lost: every verify answers CARD_SUSPENDED


@dataclass(frozen=True)
class CardState:
    card_id: str
    version: int = 0
    pins: dict[PinType, PinState] = field(default_factory=dict)
    status: CardStatus = CardStatus.ACTIVE
    ward: str | None = None  # the holder's ward, where the card records one

    @property
    def enrolled(self) -> bool:
        return self.version > 0

    def pin(self, pin_type: PinType) -> PinState | None:
        return self.pins.get(pin_type)

    def with_pin(self, pin: PinState) -> CardState:
        return replace(self, pins={**self.pins, pin.pin_type: pin})


def enrolled_card(card_id: str, pin_types: Iterable[PinType], version: int = 1, ward: str | None = None) -> CardState:
    """A card just enrolled: active, every PIN set, no failures."""
    return CardState(card_id, version, {t: PinState(t, last_version=version) for t in pin_types}, ward=ward)


@singledispatch
def _apply(event: Event, state: CardState, version: int, at: datetime) -> CardState:
    raise TypeError(f"no evolve rule for {type(event).__name__}")


@_apply.register
def _(event: CardEnrolled, state, version, at):
    return enrolled_card(state.card_id, event.pin_types, version, event.ward)


@_apply.register
def _(event: PinVerified, state, version, at):
    return state.with_pin(PinState(event.pin_type, last_version=version))


@_apply.register
def _(event: PinChanged, state, version, at):
    return state.with_pin(PinState(event.pin_type, last_version=version))


@_apply.register
def _(event: PinVerificationFailed, state, version, at):
    pin = state.pins[event.pin_type]
    return state.with_pin(replace(pin, consecutive_failures=event.consecutive_failures, last_version=version))


@_apply.register
def _(event: PinLocked, state, version, at):
    pin = state.pins[event.pin_type]
    return state.with_pin(replace(pin, locked=True, locked_at=at, last_version=version))


@_apply.register
def _(event: LockedPinAttempted, state, version, at):
    return state  # recorded for the audit trail; changes no state


def evolve(state: CardState, recorded: Recorded) -> CardState:
    """Apply one recorded event. Versions must follow each other."""
    if recorded.version != state.version + 1:
        raise ValueError(f"stream {state.card_id}: version {recorded.version} after {state.version}")
    new = _apply(recorded.event, state, recorded.version, recorded.occurred_at)
    return replace(new, version=recorded.version)


def fold(card_id: str, history: Iterable[Recorded]) -> CardState:
    state = CardState(card_id)
    for recorded in history:
        state = evolve(state, recorded)
    return state
