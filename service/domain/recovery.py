"""The way out (DESIGN.md §2): every locked or suspended answer says which
procedures can recover the PIN now, given the card's other PINs, and when
the offices that serve the card's ward next open."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from . import guards
from .calendar import TOKYO, Opening, next_openings
from .pins import PinType, pin_type_order
from .policy import Policy
from .state import CardState, PinState


class Route(enum.Enum):
    COUNTER = "counter"
    CONVENIENCE_STORE_OR_COUNTER = "convenience_store_or_counter"
    RESUME_AT_COUNTER = "resume_at_counter"


class Procedure(enum.Enum):
    COUNTER_RESET = "counter_reset"  # a ward office or Special Center (holder, representative, or proxy)
    CONVENIENCE_STORE_RESET = "convenience_store_reset"  # reserve in the app, then a kiosk within 24 h
    COUNTER_RESUME = "counter_resume"  # a suspended card, at a counter


@dataclass(frozen=True)
class Recovery:
    route: Route
    description: str
    procedures: tuple[Procedure, ...] = ()
    openings: tuple[Opening, ...] = ()  # the next openings of the offices serving the card's ward


_NAMES = {PinType.USER_CERTIFICATE: "user-certificate", PinType.SIGNATURE: "signature"}


def _usable(state: CardState, pin_type: PinType | None) -> bool:
    """The PIN would be checked now (an active card: a suspended one is answered first)."""
    return pin_type is not None and guards.pin_set(state, pin_type) and guards.why_unchecked(state, pin_type) is None


def _openings_text(openings: tuple[Opening, ...], now: datetime) -> str:
    if not openings:
        return ""
    first = openings[0]
    if first.at <= now:
        return f" {first.name} is open now."
    return f" Next opening: {first.name}, {first.at.strftime('%Y-%m-%d %H:%M')} (Asia/Tokyo)."


def recovery_for(state: CardState, pin_type: PinType, policy: Policy, now: datetime) -> Recovery:
    """For a suspended card, a counter resume. For a locked 4-digit PIN, a
    counter reset; for the signature PIN (and the user-certificate PIN where
    a chain allows it), also the convenience store while the proving PIN
    still works."""
    openings = tuple(
        Opening(o.office_id, o.name, o.at.astimezone(TOKYO)) for o in next_openings(policy.calendar, state.ward, now)
    )
    if state.suspended:
        return Recovery(
            Route.RESUME_AT_COUNTER,
            "The card is suspended; it can be resumed at a ward office or Special Center." + _openings_text(openings, now),
            (Procedure.COUNTER_RESUME,),
            openings,
        )
    proving = guards.store_proving_pin(pin_type, guards.any_chain_resets_user_certificate(policy))
    if proving is not None and _usable(state, proving):
        return Recovery(
            Route.CONVENIENCE_STORE_OR_COUNTER,
            f"Reserve a reset in the smartphone app with the {_NAMES[proving]} PIN, then reset at a convenience store "
            "kiosk within 24 hours; or reset at a ward office or Special Center." + _openings_text(openings, now),
            (Procedure.CONVENIENCE_STORE_RESET, Procedure.COUNTER_RESET),
            openings,
        )
    return Recovery(
        Route.COUNTER,
        "Reset the PIN at a ward office or a My Number Card Special Center with the card." + _openings_text(openings, now),
        (Procedure.COUNTER_RESET,),
        openings,
    )


class PinView(NamedTuple):
    """A PIN as an answer shows it: its state and, when it is locked or its
    card suspended, the way out (recovery.py), at the answer's instant."""

    pin: PinState
    recovery: Recovery | None = None


class CardView(NamedTuple):
    """A card as a status read answers it: its state and each PIN's view."""

    state: CardState
    pins: tuple[PinView, ...]


def pin_views(state: CardState, policy: Policy, now: datetime, only: PinType | None = None) -> tuple[PinView, ...]:
    """Each PIN of the card (or the one asked for), in PIN-type order, with
    the way out where an entry would not be checked (guards.why_unchecked: a
    locked PIN, or any PIN of a suspended card)."""
    pins = sorted(state.pins.values(), key=lambda p: pin_type_order(p.pin_type))
    return tuple(
        PinView(p, recovery_for(state, p.pin_type, policy, now) if guards.why_unchecked(state, p.pin_type) else None)
        for p in pins
        if only is None or p.pin_type is only
    )
