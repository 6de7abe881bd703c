"""Outcomes: what each command answers, typed per command (OUTCOME_OF), and
the PINs an answer shows. Domain outcomes that are not errors (a wrong PIN,
a lock, a suspended card, a wrong inquiry code) are answers. Kept answers
are stored in the form service/app/answers.py gives each of them.

| command | outcome |
|---|---|
| EnrollCard | Enrolled |
| VerifyPin, ChangePin | CheckOutcome |
| ResetPin, UnlockPin | PinRestored |
| RequestProxyReset | InquiryIssued |
| CompleteProxyReset | ProxyCompletion |
| SuspendCard, ResumeCard | CardStatusChanged |
| ReserveStoreReset | StoreReservation |
| StoreResetPin | StoreReset |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from .pins import PinType
from .recovery import Recovery
from .state import CardStatus


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


@dataclass(frozen=True)
class PinRestored:
    """A counter reset or unlock, or a completed proxy reset: the PIN is active with a fresh count."""

    pin_type: PinType


@dataclass(frozen=True)
class InquiryIssued:
    inquiry_id: str
    expires_at: datetime
    code: str | None  # given once; a replayed answer carries none


class ProxyResult(enum.Enum):
    COMPLETED = "completed"
    WRONG_CODE = "wrong_code"
    VOIDED = "voided"  # too many wrong codes
    EXPIRED = "expired"
    NO_OPEN_INQUIRY = "no_open_inquiry"  # used already, superseded, voided earlier, or never issued


@dataclass(frozen=True)
class ProxyCompletion:
    result: ProxyResult
    remaining_attempts: int


@dataclass(frozen=True)
class CardStatusChanged:
    status: CardStatus


@dataclass(frozen=True)
class StoreReservation:
    check: CheckOutcome  # of the proving PIN
    reservation_id: str | None  # set when reserved
    expires_at: datetime | None
    proving_pin_type: PinType | None = None  # the PIN proved (to be entered again at the kiosk)


@dataclass(frozen=True)
class StoreReset:
    check: CheckOutcome  # of the proving PIN (the PIN being reset)
    reset: bool


Outcome = (
    Enrolled | CheckOutcome | PinRestored | InquiryIssued | ProxyCompletion | CardStatusChanged | StoreReservation | StoreReset
)
