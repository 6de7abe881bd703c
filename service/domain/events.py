"""Domain events: small, past tense, immutable. The envelope (position,
version, event id, occurred-at, channel, terminal, request id, hash) is added
by the store; see Recorded below and service/store/tables.py.

No event ever carries a PIN or a PIN verifier.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from service.domain.pins import PinType


class Purpose(enum.Enum):
    """Why a PIN was checked."""

    VERIFY = "verify"
    CHANGE = "change"


@dataclass(frozen=True)
class Event:
    type_name: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "pin_type":
                continue  # an envelope column
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, enum.Enum) else v for v in value]
            out[f.name] = value
        return out


@dataclass(frozen=True)
class CardEnrolled(Event):
    """v2 added the holder's ward (None: not given; every v1 card)."""

    type_name: ClassVar[str] = "CardEnrolled"
    schema_version: ClassVar[int] = 2
    pin_types: tuple[PinType, ...]
    ward: str | None = None


@dataclass(frozen=True)
class PinVerified(Event):
    """A correct entry: the failure counter goes back to zero."""

    type_name: ClassVar[str] = "PinVerified"
    pin_type: PinType


@dataclass(frozen=True)
class PinVerificationFailed(Event):
    """A wrong entry (a verify, or the current PIN of a change)."""

    type_name: ClassVar[str] = "PinVerificationFailed"
    pin_type: PinType
    purpose: Purpose
    consecutive_failures: int
    remaining_tries: int


@dataclass(frozen=True)
class PinLocked(Event):
    """The retry limit was reached; follows the failure that reached it."""

    type_name: ClassVar[str] = "PinLocked"
    pin_type: PinType
    consecutive_failures: int


@dataclass(frozen=True)
class LockedPinAttempted(Event):
    """An attempt against a locked PIN: recorded, never checked."""

    type_name: ClassVar[str] = "LockedPinAttempted"
    pin_type: PinType
    purpose: Purpose


@dataclass(frozen=True)
class PinChanged(Event):
    """Self-service change with the current PIN known: counter back to zero."""

    type_name: ClassVar[str] = "PinChanged"
    pin_type: PinType


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (CardEnrolled, PinVerified, PinVerificationFailed, PinLocked, LockedPinAttempted, PinChanged)
}


@dataclass(frozen=True)
class Recorded:
    """An event as it sits in its stream: what evolve needs of the envelope."""

    event: Event
    version: int
    occurred_at: datetime


# -- terminal streams (service/domain/streams.py): access events, not about a card --
@dataclass(frozen=True)
class AccessDenied(Event):
    """A terminal called an RPC its role does not allow."""

    type_name: ClassVar[str] = "AccessDenied"
    rpc: str
    role: str
    card_id: str  # "" when the request named no valid card


@dataclass(frozen=True)
class TerminalThrottled(Event):
    """A terminal failed on too many distinct cards within the window."""

    type_name: ClassVar[str] = "TerminalThrottled"
    distinct_cards: int
    window_seconds: int
    throttled_until: str  # ISO 8601, UTC


EVENT_TYPES.update({cls.type_name: cls for cls in (AccessDenied, TerminalThrottled)})
