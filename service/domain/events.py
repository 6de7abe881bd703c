"""Domain events: small, past tense, immutable. The envelope (position,
version, event id, occurred-at, channel, terminal, request id, hash) is added
by the store; see Recorded below and service/store/tables.py.

No event ever carries a PIN or a PIN verifier.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from .pins import PinType


class Purpose(enum.Enum):
    """Why a PIN was checked."""

    VERIFY = "verify"
    CHANGE = "change"
    STORE_RESERVATION = "store_reservation"  # the other certificate's PIN, proved in the reset app
    STORE_RESET = "store_reset"  # the same PIN proved again at the kiosk


# -- the words of the stored vocabulary ----------------------------------------------
# Their values are stored in event payloads and covered by the keyed chain:
# never change one. A stored value this release does not know is read as the
# plain string (upcasting.py), which the lawful check reports (lawful.py).


class RefusalReason(enum.StrEnum):
    """Why a procedure was refused: CounterOutOfService.reason (the counter
    gate) and ResetRefused.reason (the store procedures, the proxy's second
    visit, also at the day's bound of wrong codes). Upper-cased, it is the PreconditionViolation type the caller gets."""

    OUT_OF_HOURS = "out_of_hours"
    OUT_OF_JURISDICTION = "out_of_jurisdiction"
    UNKNOWN_OFFICE = "unknown_office"
    COUNTER_ONLY = "counter_only"
    STORE_CLOSED = "store_closed"
    NO_RESERVATION = "no_reservation"
    RESERVATION_EXPIRED = "reservation_expired"
    NO_OPEN_INQUIRY = "no_open_inquiry"
    # the card and PIN type took the day's bound of wrong proxy codes (policy.proxy_wrong_codes_per_day)
    PROXY_CODES_EXHAUSTED = "proxy_codes_exhausted"
    INQUIRY_OPEN = "inquiry_open"  # a new proxy inquiry while a recent one is open (guards.inquiry_reissue_refused)

    @property
    def violation_type(self) -> str:
        """The PreconditionViolation type (the API's word): OUT_OF_HOURS, STORE_CLOSED, ..."""
        return self.value.upper()


class ResetProcedure(enum.StrEnum):
    """How a PIN was reset (PinReset.procedure: counter, proxy,
    convenience_store), or which step of a reset was refused
    (ResetRefused.procedure: proxy, store_reservation, convenience_store)."""

    COUNTER = "counter"
    PROXY = "proxy"  # the proxy's second visit
    STORE_RESERVATION = "store_reservation"  # the reset app's reservation
    CONVENIENCE_STORE = "convenience_store"  # the kiosk
    PROXY_INQUIRY = "proxy_inquiry"  # the proxy's first visit (refused only: ResetRefused)


class CounterProcedure(enum.StrEnum):
    """A counter procedure with a checklist (CounterProcedureRefused.procedure;
    documents.CHECKLISTS says who applies and which checklist)."""

    RESET = "reset"
    UNLOCK = "unlock"
    RESUME = "resume"
    PROXY_INQUIRY = "proxy_inquiry"  # the proxy's first visit
    PROXY_COMPLETION = "proxy_completion"  # the proxy's second visit


class InquiryCloseReason(enum.StrEnum):
    """Why an open proxy inquiry ended without a reset (ProxyInquiryClosed.reason)."""

    SUPERSEDED = "superseded"  # a new inquiry for the same PIN
    VOIDED = "voided"  # no attempts left after wrong codes
    EXPIRED = "expired"  # found expired at the second visit


W = TypeVar("W", bound=enum.StrEnum)


def known_word(vocabulary: type[W], value: str) -> W | None:
    """The member of a vocabulary a recorded value names (an event read
    from a store holds the member; one built by hand may hold the plain
    string), or None: a word this release does not know."""
    try:
        return vocabulary(value)
    except ValueError:
        return None


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
    """An attempt against a locked PIN: recorded, never checked. v2 added
    `repeated` (service/domain/repeats.py: the attempts of the same key not
    recorded on their own since the previous one)."""

    type_name: ClassVar[str] = "LockedPinAttempted"
    schema_version: ClassVar[int] = 2
    pin_type: PinType
    purpose: Purpose
    repeated: int = 0


@dataclass(frozen=True)
class PinChanged(Event):
    """Self-service change with the current PIN known: counter back to zero."""

    type_name: ClassVar[str] = "PinChanged"
    pin_type: PinType


@dataclass(frozen=True)
class PinReset(Event):
    """A new PIN was set and the PIN unlocked: the count starts afresh. Any
    open inquiry or reservation for the PIN is closed."""

    type_name: ClassVar[str] = "PinReset"
    pin_type: PinType
    procedure: ResetProcedure | str  # counter | proxy | convenience_store (str: unknown when read)
    applicant: str  # holder | legal_representative | proxy
    documents: tuple[str, ...]  # the document types checked (never copies)


@dataclass(frozen=True)
class PinUnlocked(Event):
    """The PIN was unlocked at a counter and kept: the count starts afresh."""

    type_name: ClassVar[str] = "PinUnlocked"
    pin_type: PinType
    applicant: str
    documents: tuple[str, ...]


@dataclass(frozen=True)
class CounterProcedureRefused(Event):
    """A counter procedure refused for an incomplete or stale checklist. v2
    names the PIN type it was for (None: ResumeCard, which is for no PIN;
    every v1 event, which did not record it) and added `repeated`
    (repeats.py)."""

    type_name: ClassVar[str] = "CounterProcedureRefused"
    schema_version: ClassVar[int] = 2
    procedure: CounterProcedure | str  # str: a stored value this release does not know
    missing: tuple[str, ...]  # the violations' subjects, e.g. documents/authority
    pin_type: PinType | None = None  # an envelope column
    repeated: int = 0


@dataclass(frozen=True)
class CardSuspended(Event):
    """A lost card: every verify answers CARD_SUSPENDED until it is resumed."""

    type_name: ClassVar[str] = "CardSuspended"
    reason: str


@dataclass(frozen=True)
class CardResumed(Event):
    type_name: ClassVar[str] = "CardResumed"
    applicant: str
    documents: tuple[str, ...]


@dataclass(frozen=True)
class SuspendedCardAttempted(Event):
    """An attempt against a suspended card: recorded, never checked. v2
    added `repeated` (repeats.py)."""

    type_name: ClassVar[str] = "SuspendedCardAttempted"
    schema_version: ClassVar[int] = 2
    pin_type: PinType
    purpose: Purpose
    repeated: int = 0


@dataclass(frozen=True)
class ProxyInquiryIssued(Event):
    """A proxy's first visit: an inquiry with a one-time code (stored only as
    a keyed hash, never here) is mailed to the holder."""

    type_name: ClassVar[str] = "ProxyInquiryIssued"
    pin_type: PinType
    inquiry_id: str
    expires_at: str  # ISO 8601, UTC
    documents: tuple[str, ...]


@dataclass(frozen=True)
class ProxyInquiryClosed(Event):
    """An open inquiry ended without a reset: superseded by a new one,
    voided after too many wrong codes, or found expired."""

    type_name: ClassVar[str] = "ProxyInquiryClosed"
    pin_type: PinType
    inquiry_id: str
    reason: InquiryCloseReason | str  # str: a stored value this release does not know


@dataclass(frozen=True)
class ProxyInquiryCodeRejected(Event):
    """A wrong code at a proxy's second visit. v2 added wrong_codes_today:
    the card's wrong codes for this PIN type on this Tokyo day, across
    inquiries, this one included (0: recorded before they were counted, every v1
    event)."""

    type_name: ClassVar[str] = "ProxyInquiryCodeRejected"
    schema_version: ClassVar[int] = 2
    pin_type: PinType
    inquiry_id: str
    wrong_codes: int  # of this inquiry
    remaining: int  # attempts this inquiry still takes
    wrong_codes_today: int = 0


@dataclass(frozen=True)
class StoreResetReserved(Event):
    """The reset app reserved a convenience-store reset, proving the other
    certificate's PIN; valid until expires_at."""

    type_name: ClassVar[str] = "StoreResetReserved"
    pin_type: PinType
    reservation_id: str
    proving_pin_type: str
    expires_at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class ResetRefused(Event):
    """A store reservation or completion, or a proxy completion, refused
    with a reason (no reservation, expired, counter only, ...), or a proxy
    inquiry refused while a recent one is open. v2 added `repeated`
    (repeats.py)."""

    type_name: ClassVar[str] = "ResetRefused"
    schema_version: ClassVar[int] = 2
    pin_type: PinType
    procedure: ResetProcedure | str  # proxy | proxy_inquiry | store_reservation | convenience_store (str: unknown)
    reason: RefusalReason | str  # str: a stored value this release does not know
    repeated: int = 0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (
        CardEnrolled,
        PinVerified,
        PinVerificationFailed,
        PinLocked,
        LockedPinAttempted,
        PinChanged,
        PinReset,
        PinUnlocked,
        CounterProcedureRefused,
        CardSuspended,
        CardResumed,
        SuspendedCardAttempted,
        ProxyInquiryIssued,
        ProxyInquiryClosed,
        ProxyInquiryCodeRejected,
        StoreResetReserved,
        ResetRefused,
    )
}


@dataclass(frozen=True)
class Recorded:
    """An event as it sits in its stream: what evolve needs of the envelope."""

    event: Event
    version: int
    occurred_at: datetime
    office: str | None = None  # the counter's office that recorded it (its hours and wards applied)


# -- terminal streams (service/domain/streams.py): access events, not about a card --
@dataclass(frozen=True)
class AccessDenied(Event):
    """A terminal called an RPC its role does not allow. Refusals are
    aggregated (service/app/service.py: Refusals): at most one event per
    terminal and window, `repeated` counting the refusals of that terminal
    not recorded on their own since its previous AccessDenied."""

    type_name: ClassVar[str] = "AccessDenied"
    schema_version: ClassVar[int] = 2
    rpc: str
    role: str
    card_id: str  # "" when the request named no valid card
    repeated: int = 0


@dataclass(frozen=True)
class CounterOutOfService(Event):
    """A counter terminal acted outside its office's hours, or for a card of
    a ward its office does not serve: refused. v2 added `repeated` (repeats.py)."""

    type_name: ClassVar[str] = "CounterOutOfService"
    schema_version: ClassVar[int] = 2
    rpc: str
    card_id: str
    reason: RefusalReason | str  # out_of_hours | out_of_jurisdiction | unknown_office (str: unknown when read)
    repeated: int = 0


@dataclass(frozen=True)
class TerminalThrottled(Event):
    """A terminal failed on too many distinct cards within the window."""

    type_name: ClassVar[str] = "TerminalThrottled"
    distinct_cards: int
    window_seconds: int
    throttled_until: str  # ISO 8601, UTC


@dataclass(frozen=True)
class SuspensionRefused(Event):
    """A terminal asked to suspend a card beyond its bound of suspensions per
    window (policy.suspensions_per_window): refused, no card suspended."""

    type_name: ClassVar[str] = "SuspensionRefused"
    card_id: str
    suspensions: int  # made by the terminal within the window
    window_seconds: int
    free_at: str  # ISO 8601, UTC: when it may suspend again
    repeated: int = 0  # refusals of the same card not recorded on their own since (repeats.py)


@dataclass(frozen=True)
class AuditRead(Event):
    """An auditor's call (the audit of the auditors), on the auditor
    terminal's stream: which RPC, which card or filter, how many events it
    returned. v2 added `repeated` (repeats.py: the same call, card and
    filter, not recorded on its own since; events_returned is this call's)."""

    type_name: ClassVar[str] = "AuditRead"
    schema_version: ClassVar[int] = 2
    rpc: str
    card_id: str  # "" when the call named no card
    filter: str  # the filter as JSON (service/domain/audit.py: Filter.as_dict)
    events_returned: int
    repeated: int = 0


@dataclass(frozen=True)
class RepeatsCounted(Event):
    """Repeats of an aggregated event (repeats.py) that no later event of
    their key will carry: the terminal had too many keys with repeats
    pending, and this key's count is reported here, on the terminal's
    stream, instead of in the `repeated` of its next event. `stream` is
    where the events of the key are recorded (a card id, or "" for the
    terminal's own stream); the PIN type, when the key has one, is in the
    envelope."""

    type_name: ClassVar[str] = "RepeatsCounted"
    event_type: str  # the aggregated event's type
    stream: str
    detail: str  # the rest of the key, as JSON (the event's payload without its counts)
    repeated: int
    since: str  # ISO 8601, UTC: when the last event of the key was recorded
    pin_type: PinType | None = None  # an envelope column


EVENT_TYPES.update(
    {
        cls.type_name: cls
        for cls in (AccessDenied, CounterOutOfService, TerminalThrottled, SuspensionRefused, AuditRead, RepeatsCounted)
    }
)
