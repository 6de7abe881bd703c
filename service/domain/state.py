"""State of a card and its PINs, and evolve: the fold of a card's events.

The lock-state projection (service/store) is exactly this fold, kept up to
date in the append transaction; a rebuild from the events must equal it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import singledispatch
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from .calendar import tokyo_day
from .events import (
    CardEnrolled,
    CardResumed,
    CardSuspended,
    CounterProcedureRefused,
    Event,
    LockedPinAttempted,
    PinChanged,
    PinLocked,
    PinReset,
    PinUnlocked,
    PinVerificationFailed,
    PinVerified,
    ProxyInquiryClosed,
    ProxyInquiryCodeRejected,
    ProxyInquiryIssued,
    Recorded,
    ResetRefused,
    StoreResetReserved,
    SuspendedCardAttempted,
)
from .pins import PinType, retry_limit

K = TypeVar("K")
V = TypeVar("V")

EMPTY: Mapping[Any, Any] = MappingProxyType({})  # the shared, unchangeable empty default


class PinState(NamedTuple):
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


class Inquiry(NamedTuple):
    """An open proxy inquiry (one per PIN type); its code is a secret."""

    inquiry_id: str
    expires_at: datetime
    wrong_codes: int = 0


class Reservation(NamedTuple):
    """An open convenience-store reservation (one per PIN type); its token is a secret."""

    reservation_id: str
    proving_pin_type: PinType
    expires_at: datetime


class CodeDay(NamedTuple):
    """The wrong proxy codes entered for one PIN type on one Tokyo day,
    across inquiries (the daily bound: guards.proxy_codes_exhausted)."""

    day: date
    wrong_codes: int


class CardState(NamedTuple):
    """Immutable values (NamedTuples: built for nearly every event on the
    write path and in rebuilds, and a tuple is built far faster than a frozen
    dataclass). Its dicts are never changed in place: evolve makes new ones."""

    card_id: str
    version: int = 0
    pins: Mapping[PinType, PinState] = EMPTY
    status: CardStatus = CardStatus.ACTIVE
    ward: str | None = None  # the holder's ward, where the card records one
    inquiries: Mapping[PinType, Inquiry] = EMPTY
    reservations: Mapping[PinType, Reservation] = EMPTY
    code_days: Mapping[PinType, CodeDay] = EMPTY  # the last Tokyo day with a wrong proxy code, per PIN type

    @property
    def suspended(self) -> bool:
        return self.status is CardStatus.SUSPENDED

    @property
    def enrolled(self) -> bool:
        return self.version > 0

    def pin(self, pin_type: PinType) -> PinState | None:
        return self.pins.get(pin_type)

    def with_pin(self, pin: PinState) -> CardState:
        # Spelled out rather than _replace: this runs for nearly every event.
        return CardState(
            self.card_id,
            self.version,
            {**self.pins, pin.pin_type: pin},
            self.status,
            self.ward,
            self.inquiries,
            self.reservations,
            self.code_days,
        )


def enrolled_card(card_id: str, pin_types: Iterable[PinType], version: int = 1, ward: str | None = None) -> CardState:
    """A card just enrolled: active, every PIN set, no failures."""
    return CardState(card_id, version, {t: PinState(t, last_version=version) for t in pin_types}, ward=ward)


@singledispatch
def _apply(event: Event, state: CardState, version: int, at: datetime) -> CardState:
    raise TypeError(f"no evolve rule for {type(event).__name__}")


@_apply.register
def _(event: CardEnrolled, state: CardState, version: int, at: datetime) -> CardState:
    return enrolled_card(state.card_id, event.pin_types, version, event.ward)


@_apply.register
def _(event: PinVerified, state: CardState, version: int, at: datetime) -> CardState:
    return state.with_pin(PinState(event.pin_type, last_version=version))


@_apply.register
def _(event: PinChanged, state: CardState, version: int, at: datetime) -> CardState:
    return state.with_pin(PinState(event.pin_type, last_version=version))


@_apply.register
def _(event: PinVerificationFailed, state: CardState, version: int, at: datetime) -> CardState:
    pin = state.pins[event.pin_type]
    return state.with_pin(PinState(pin.pin_type, event.consecutive_failures, pin.locked, pin.locked_at, version))


@_apply.register
def _(event: PinLocked, state: CardState, version: int, at: datetime) -> CardState:
    pin = state.pins[event.pin_type]
    return state.with_pin(PinState(pin.pin_type, pin.consecutive_failures, True, at, version))


@_apply.register
def _(event: LockedPinAttempted, state: CardState, version: int, at: datetime) -> CardState:
    return state  # recorded for the audit trail; changes no state


@_apply.register
def _(event: SuspendedCardAttempted, state: CardState, version: int, at: datetime) -> CardState:
    return state  # recorded; changes no state


@_apply.register
def _(event: CounterProcedureRefused, state: CardState, version: int, at: datetime) -> CardState:
    return state  # recorded; changes no state


@_apply.register
def _(event: ResetRefused, state: CardState, version: int, at: datetime) -> CardState:
    return state  # recorded; changes no state


def _without(mapping: Mapping[K, V], key: K) -> dict[K, V]:
    return {k: v for k, v in mapping.items() if k != key}


@_apply.register
def _(event: PinReset, state: CardState, version: int, at: datetime) -> CardState:
    fresh = state.with_pin(PinState(event.pin_type, last_version=version))
    return fresh._replace(
        inquiries=_without(state.inquiries, event.pin_type),
        reservations=_without(state.reservations, event.pin_type),
    )


@_apply.register
def _(event: PinUnlocked, state: CardState, version: int, at: datetime) -> CardState:
    return state.with_pin(PinState(event.pin_type, last_version=version))


@_apply.register
def _(event: CardSuspended, state: CardState, version: int, at: datetime) -> CardState:
    return state._replace(status=CardStatus.SUSPENDED)


@_apply.register
def _(event: CardResumed, state: CardState, version: int, at: datetime) -> CardState:
    return state._replace(status=CardStatus.ACTIVE)


@_apply.register
def _(event: ProxyInquiryIssued, state: CardState, version: int, at: datetime) -> CardState:
    inquiry = Inquiry(event.inquiry_id, datetime.fromisoformat(event.expires_at))
    return state._replace(inquiries={**state.inquiries, event.pin_type: inquiry})


@_apply.register
def _(event: ProxyInquiryCodeRejected, state: CardState, version: int, at: datetime) -> CardState:
    inquiry = state.inquiries[event.pin_type]._replace(wrong_codes=event.wrong_codes)
    inquiries = {**state.inquiries, event.pin_type: inquiry}
    if not event.wrong_codes_today:  # recorded before wrong codes were counted per day (schema v1)
        return state._replace(inquiries=inquiries)
    today = CodeDay(tokyo_day(at), event.wrong_codes_today)
    return state._replace(inquiries=inquiries, code_days={**state.code_days, event.pin_type: today})


@_apply.register
def _(event: ProxyInquiryClosed, state: CardState, version: int, at: datetime) -> CardState:
    return state._replace(inquiries=_without(state.inquiries, event.pin_type))


@_apply.register
def _(event: StoreResetReserved, state: CardState, version: int, at: datetime) -> CardState:
    reservation = Reservation(event.reservation_id, PinType(event.proving_pin_type), datetime.fromisoformat(event.expires_at))
    return state._replace(reservations={**state.reservations, event.pin_type: reservation})


def evolve(state: CardState, recorded: Recorded) -> CardState:
    """Apply one recorded event. Versions must follow each other."""
    if recorded.version != state.version + 1:
        raise ValueError(f"stream {state.card_id}: version {recorded.version} after {state.version}")
    new = _apply(recorded.event, state, recorded.version, recorded.occurred_at)
    return CardState(
        new.card_id, recorded.version, new.pins, new.status, new.ward, new.inquiries, new.reservations, new.code_days
    )


def fold(card_id: str, history: Iterable[Recorded]) -> CardState:
    state = CardState(card_id)
    for recorded in history:
        state = evolve(state, recorded)
    return state
