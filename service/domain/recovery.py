"""The way out of a lock (DESIGN.md §2): a locked answer tells the caller
where the holder can go."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from service.domain.pins import PinType
from service.domain.state import CardState


class Route(enum.Enum):
    COUNTER = "counter"
    CONVENIENCE_STORE_OR_COUNTER = "convenience_store_or_counter"
    RESUME_AT_COUNTER = "resume_at_counter"


@dataclass(frozen=True)
class Recovery:
    route: Route
    description: str


COUNTER_RESET = Recovery(
    Route.COUNTER,
    "Reset the PIN at a ward office or a My Number Card Special Center with the card.",
)
STORE_RESET = Recovery(
    Route.CONVENIENCE_STORE_OR_COUNTER,
    "Reserve a reset in the smartphone app with the user-certificate PIN, then reset at a "
    "convenience store kiosk within 24 hours; or reset at a ward office or Special Center.",
)
RESUME = Recovery(
    Route.RESUME_AT_COUNTER,
    "The card is suspended; it can be resumed at a ward office or Special Center.",
)


def recovery_for_locked_pin(state: CardState, pin_type: PinType) -> Recovery:
    """A 4-digit PIN: a counter reset. The signature PIN: the convenience
    store while the user-certificate PIN still works, else a counter."""
    if pin_type is PinType.SIGNATURE:
        user_cert = state.pin(PinType.USER_CERTIFICATE)
        if user_cert is not None and not user_cert.locked:
            return STORE_RESET
    return COUNTER_RESET
