"""Guards: each rule that both the deciders and the lawful-history check
apply, stated once. A decider (decide.py, decision.py, procedures.py) calls
a guard to DECIDE what happens; the lawful check (lawful.py) calls the same
guard to JUDGE whether a recorded event could have happened, trying each
value of what the stream does not record (the chain, an adult-ward flag,
the hours without the policy). A rule changed here changes on both sides;
the way out of a lock (recovery.py) asks them too.

Pure: no clock (the instant is an argument), no I/O, no key.

| rule (DESIGN.md §2) | guard |
|---|---|
| a procedure acts only on a PIN the card enrolled | pin_set |
| a suspended card, a locked PIN, is never checked | why_unchecked |
| a wrong entry adds one failure; reaching the limit locks | wrong_entry, locks |
| an inquiry or a reservation is used before, not at, its expiry | expired |
| the validity of an inquiry and of a reservation | inquiry_expiry, reservation_expiry |
| an inquiry is voided at the configured number of wrong codes | inquiry_attempts_left, inquiry_voided |
| a card and PIN type take a bounded number of wrong proxy codes per Tokyo day, across inquiries | wrong_codes_today, wrong_code_today, proxy_codes_left_today, proxy_codes_exhausted, proxy_codes_free_at |
| a terminal makes a bounded number of suspensions per window (decided only: a card's stream does not record the terminal) | suspension_free_at |
| a new inquiry is refused while one issued recently is open | inquiry_reissue_refused |
| a counter acts only in its office's hours, for the wards it serves, whatever it asks | counter_refusal |
| a card's ward at enrolment is one an office serves | ward_served |
| documents are dated by the Tokyo calendar day | day_of |
| the checklist of a counter procedure; what a refusal can name | checklist_gaps, refusable_subjects |
| kiosks run 6:30-23:00 Asia/Tokyo (configurable) | kiosk_open |
| which PIN proves a store reset (a per-chain setting) | store_proving_pin, any_chain_resets_user_certificate |
| which PIN the reset app checks to reserve one | reservation_proving_pin |
| the kiosk's refusals, in its order | kiosk_refusal, KIOSK_REFUSALS |
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import date, datetime
from functools import cache
from typing import NamedTuple

from .calendar import TOKYO, next_tokyo_day, tokyo_day
from .documents import CHECKLISTS, Applicant, Document, check_checklist
from .errors import PreconditionViolation
from .events import CounterProcedure, RefusalReason
from .pins import PinType, retry_limit
from .policy import Policy
from .state import CardState, PinState


# -- a card's PINs and their checks ----------------------------------------------------------
def pin_set(state: CardState, pin_type: PinType) -> bool:
    """The card enrolled this PIN type: nothing acts on a PIN it never set."""
    return state.pin(pin_type) is not None


class Unchecked(enum.Enum):
    CARD_SUSPENDED = "card_suspended"  # recorded as SuspendedCardAttempted
    PIN_LOCKED = "pin_locked"  # recorded as LockedPinAttempted


def why_unchecked(state: CardState, pin_type: PinType) -> Unchecked | None:
    """Why an entry of a PIN the card has is recorded but never checked
    (None: it is checked). A suspended card is answered so before a lock."""
    if state.suspended:
        return Unchecked.CARD_SUSPENDED
    if state.pins[pin_type].locked:
        return Unchecked.PIN_LOCKED
    return None


class WrongEntry(NamedTuple):
    consecutive_failures: int
    remaining_tries: int


def wrong_entry(pin: PinState) -> WrongEntry:
    """A wrong entry adds exactly one consecutive failure; the tries left are the limit less them."""
    failures = pin.consecutive_failures + 1
    return WrongEntry(failures, retry_limit(pin.pin_type) - failures)


def locks(pin_type: PinType, consecutive_failures: int) -> bool:
    """Reaching the retry limit locks the PIN (the failure is recorded, then the lock)."""
    return consecutive_failures >= retry_limit(pin_type)


# -- what expires ----------------------------------------------------------------------------
def expired(expires_at: datetime, at: datetime) -> bool:
    """An inquiry or a reservation is good before its expiry, not at it."""
    return at >= expires_at


def inquiry_expiry(policy: Policy, at: datetime) -> datetime:
    """The expiry of a proxy inquiry issued at `at`."""
    return at + policy.inquiry_validity


def reservation_expiry(policy: Policy, at: datetime) -> datetime:
    """The expiry of a store reservation made at `at`."""
    return at + policy.reservation_validity


def inquiry_attempts_left(policy: Policy, wrong_codes: int) -> int:
    """The codes an inquiry still takes after `wrong_codes` wrong ones."""
    return max(0, policy.inquiry_max_wrong_codes - wrong_codes)


def inquiry_reissue_refused(policy: Policy, expires_at: datetime, at: datetime) -> bool:
    """A new inquiry for a PIN is refused while its open inquiry (expiring
    at `expires_at`) was issued less than `inquiry_reissue_after` ago (its
    issue is its expiry less the validity); after that, or once it has
    expired, a new one supersedes it."""
    issued_at = expires_at - policy.inquiry_validity
    return not expired(expires_at, at) and at < issued_at + policy.inquiry_reissue_after


def inquiry_voided(attempts_left: int) -> bool:
    """The wrong code that leaves no attempt voids the inquiry (in the same command)."""
    return attempts_left <= 0


def wrong_codes_today(state: CardState, pin_type: PinType, at: datetime) -> int:
    """The wrong proxy codes entered for this PIN type on the Tokyo day of
    `at`, across every inquiry (the card's fold counts them: state.CodeDay)."""
    counted = state.code_days.get(pin_type)
    return counted.wrong_codes if counted is not None and counted.day == day_of(at) else 0


def wrong_code_today(state: CardState, pin_type: PinType, at: datetime) -> int:
    """A wrong proxy code at `at` adds one to the day's count (ProxyInquiryCodeRejected.wrong_codes_today)."""
    return wrong_codes_today(state, pin_type, at) + 1


def proxy_codes_left_today(policy: Policy, state: CardState, pin_type: PinType, at: datetime) -> int:
    """The wrong codes this card and PIN type may still take today."""
    return max(0, policy.proxy_wrong_codes_per_day - wrong_codes_today(state, pin_type, at))


def proxy_codes_exhausted(policy: Policy, state: CardState, pin_type: PinType, at: datetime) -> bool:
    """The day's bound is reached: a completion is refused without its code being checked."""
    return proxy_codes_left_today(policy, state, pin_type, at) <= 0


def proxy_codes_free_at(at: datetime) -> datetime:
    """When a card whose daily bound is reached at `at` takes codes again: the next Tokyo midnight."""
    return next_tokyo_day(at)


# -- terminals -------------------------------------------------------------------------------
def suspension_free_at(policy: Policy, recent: Iterable[datetime], at: datetime) -> datetime | None:
    """None: a terminal whose suspensions were made at `recent` may suspend
    a card at `at`; else when it may again (its oldest suspension that keeps
    it at the bound leaves the window). A suspension counts while
    at < its time + suspension_window."""
    bound, window = policy.suspensions_per_window, policy.suspension_window
    within = sorted(t for t in recent if t > at - window)
    if len(within) < bound:
        return None
    return within[-bound] + window


# -- counters --------------------------------------------------------------------------------
def counter_refusal(policy: Policy, office_id: str | None, ward: str | None, at: datetime) -> RefusalReason | None:
    """Why a counter may not act now for a card of this ward (None: it may).
    A terminal without an office (the call centre, development mode) is not
    a counter and is not gated."""
    if office_id is None:
        return None
    calendar = policy.calendar
    office = calendar.offices.get(office_id)
    if office is None:
        return RefusalReason.UNKNOWN_OFFICE
    if not calendar.is_open(office, at):
        return RefusalReason.OUT_OF_HOURS
    if not office.serves(ward):
        return RefusalReason.OUT_OF_JURISDICTION
    return None


def ward_served(policy: Policy, ward: str | None) -> bool:
    """A card enrolled with a ward names one that an office of the offices
    file serves, so a counter can reset, unlock or resume it (no ward:
    every office serves the card)."""
    return ward is None or bool(policy.calendar.serving(ward))


def day_of(at: datetime) -> date:
    """The Tokyo calendar day of an instant: documents are dated, and checked, by it; wrong proxy codes are counted by it."""
    return tokyo_day(at)


def checklist_gaps(
    procedure: CounterProcedure, applicant: Applicant, documents: tuple[Document, ...], at: datetime, *, adult_ward: bool
) -> list[PreconditionViolation]:
    """Every missing or stale document of the procedure's checklist
    (documents.CHECKLISTS, documents.check_checklist); empty: complete. The
    applicant is one CHECKLISTS lets apply (commands.py validates it)."""
    step = CHECKLISTS[procedure].step
    return check_checklist(applicant, documents, day_of(at), adult_ward=adult_ward, step=step)


_ANY_DAY = date(2000, 1, 1)  # an empty checklist misses the same documents on every day


@cache
def refusable_subjects(procedure: CounterProcedure) -> frozenset[str]:
    """Every subject a refusal of the procedure can name as missing or
    stale: those an empty checklist misses, for every applicant who may
    apply and either adult-ward flag (a checklist with more documents misses
    no more: tests/unit/test_guards.py)."""
    step = CHECKLISTS[procedure].step
    return frozenset(
        v.subject
        for applicant in CHECKLISTS[procedure].applicants
        for adult_ward in (False, True)
        for v in check_checklist(applicant, (), _ANY_DAY, adult_ward=adult_ward, step=step)
    )


# -- the convenience store -------------------------------------------------------------------
def kiosk_open(policy: Policy, at: datetime) -> bool:
    """Kiosks run from store_opens to store_closes, Asia/Tokyo."""
    return policy.store_opens <= at.astimezone(TOKYO).time() < policy.store_closes


def any_chain_resets_user_certificate(policy: Policy) -> bool:
    """Does some configured store chain reset the user-certificate PIN? (The
    reset app reserves for any chain; the way out offers the store then.)"""
    return any(c.resets_user_certificate for c in policy.store_chains.values())


def store_proving_pin(pin_type: PinType, chain_resets_user_certificate: bool) -> PinType | None:
    """Which PIN proves the holder for a store reset of `pin_type` (None: counter only).
    The signature PIN by the user-certificate PIN; the user-certificate PIN
    by the signature PIN where the chain allows it; the others never."""
    if pin_type is PinType.SIGNATURE:
        return PinType.USER_CERTIFICATE
    if pin_type is PinType.USER_CERTIFICATE and chain_resets_user_certificate:
        return PinType.SIGNATURE
    return None


def reservation_proving_pin(state: CardState, pin_type: PinType, chain_resets_user_certificate: bool) -> PinType | None:
    """The PIN the reset app checks to reserve a store reset of `pin_type`
    on this card (None: refused as counter only, also when the card lacks
    the proving PIN)."""
    proving = store_proving_pin(pin_type, chain_resets_user_certificate)
    return proving if proving is not None and pin_set(state, proving) else None


KIOSK_REFUSALS = frozenset(  # what kiosk_refusal answers, besides None
    {RefusalReason.STORE_CLOSED, RefusalReason.COUNTER_ONLY, RefusalReason.NO_RESERVATION, RefusalReason.RESERVATION_EXPIRED}
)


def kiosk_refusal(
    state: CardState, pin_type: PinType, proving: PinType | None, at: datetime, *, is_open: bool
) -> RefusalReason | None:
    """Why the kiosk refuses a reset of `pin_type` before it checks the
    proving PIN, in its order (None: it checks the proving PIN; on a
    suspended card that check is recorded as such, before any reservation
    is looked for). proving: store_proving_pin for the store's chain;
    is_open: kiosk_open now."""
    if not is_open:
        return RefusalReason.STORE_CLOSED
    if proving is None:
        return RefusalReason.COUNTER_ONLY
    if state.suspended:
        return None
    reservation = state.reservations.get(pin_type)
    if reservation is None or reservation.proving_pin_type is not proving:
        return RefusalReason.NO_RESERVATION
    if expired(reservation.expires_at, at):
        return RefusalReason.RESERVATION_EXPIRED
    return None
