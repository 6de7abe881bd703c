"""A lawful history: could the rules have produced this card stream?

The hash chain proves that a stream was not changed after it was written; it
cannot tell whether someone with write access wrote a stream the rules would
never have produced (a locked PIN silently unlocked, a lock without the
failures, a second enrolment ...). `first_unlawful` folds a card's stream with
the domain's own `evolve` and, before applying each event, asks the rule of
its type whether the state the earlier events lead to allows it. It names the
first event that breaks a rule, or returns None.

The rule of every card event type is in RULES, one entry per type: what its
deciders (decision.py, decide.py, procedures.py) require of the card's state
before they emit it (`requires`), what must follow it in the same command
(`then`), and what they also require that no stream can show (`unchecked`:
PIN correctness, office hours, documents' issue dates ...). A new event type
needs an entry here (tests/unit/test_lawful.py fails without one).

The rules judge by the guards the deciders decide by (guards.py: a locked
PIN or a suspended card is never checked, a wrong entry adds one failure,
expiry, validity, the inquiry's attempts, what a checklist can miss, the
kiosk's hours and refusals, which PIN proves a store reset ...), so a rule
is stated once and both sides follow it. What the stream does not record
(the kiosk's chain; the policy, when not given) is tried at each value it
may have had. The reasons given here only explain a guard's "no". Recorded
words (procedures, refusal and closing reasons) are read with their enums
(events.py); an unknown word is unlawful.

Checked for every stream, outside the table:
- versions run 1, 2, ... n without a gap or a repeat;
- occurred-at never goes back (within `clock_tolerance`: the service clock
  is the wall clock of whichever instance decided, not a monotonic one);
- the first event is CardEnrolled;
- an event that must be followed by another in the same command (a failure
  reaching the limit by its lock, a last wrong inquiry code by the voiding, a
  superseded inquiry by the new one) is: directly, at the same occurred-at
  (one command's events are appended together, at one instant). A stream
  that ends before the follower is unlawful at the event left alone.

Configuration is not in the stream. Given the Policy (only if it has not
changed over the streams' lives), a few more rules are checked: the kiosk's
hours, the validity of inquiries and reservations, the number of wrong
inquiry codes, the daily bound of wrong codes per card and PIN type (no
code checked beyond it; a refusal only at it), whether any store chain may
reset the user-certificate PIN, that an event a counter recorded (its office
is on it) fell in the office's hours and a ward it serves, and that an
enrolment's ward is one an office serves. Without it those are not checked;
the day's count of wrong codes across inquiries always is.

Pure: no clock, no store, no keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from . import guards
from .calendar import TOKYO
from .commands import SUSPEND_REASONS, WARD_ID
from .documents import CHECKLISTS, Applicant, Document, DocumentType
from .events import (
    AccessDenied,
    AuditRead,
    CardEnrolled,
    CardResumed,
    CardSuspended,
    CounterOutOfService,
    CounterProcedure,
    CounterProcedureRefused,
    Event,
    InquiryCloseReason,
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
    Purpose,
    Recorded,
    RefusalReason,
    RepeatsCounted,
    ResetProcedure,
    ResetRefused,
    StoreResetReserved,
    SuspendedCardAttempted,
    SuspensionRefused,
    TerminalThrottled,
    known_word,
)
from .pins import PinType, retry_limit
from .policy import Policy
from .state import CardState, evolve


@dataclass(frozen=True)
class Unlawful:
    """The first event of a stream that the rules could not have produced
    from the state the earlier events lead to."""

    version: int
    event_type: str
    reason: str


class Before(NamedTuple):
    """What a rule sees: the card as the earlier events left it."""

    state: CardState
    at: datetime  # the event's occurred-at: the `now` its decider ran at
    previous: Recorded | None  # the event just before (None for the first)
    policy: Policy | None  # configuration, when the caller vouches for it
    ids: set[str]  # inquiry and reservation ids issued earlier in the stream (ids are fresh)


class Then(NamedTuple):
    """What must directly follow an event, in the same command."""

    what: str
    matches: Callable[[Event], bool]


Reason = str | None  # why the event is unlawful here (None: it is lawful)


class Rule(NamedTuple):
    requires: Callable[[Any, Before], Reason]
    then: Callable[[Any], Then | None]
    unchecked: str  # what the deciders also require that the stream cannot show


def _nothing(event: Any) -> Then | None:
    return None


# -- what several rules share -------------------------------------------------------
# Each rule asks the guards (guards.py) what the deciders would have done; for
# what the stream does not record it tries each possible value. The messages
# only explain a guard's "no".


def _pin(b: Before, t: PinType) -> Reason:
    if not guards.pin_set(b.state, t):
        return f"the card never enrolled a {t.value} PIN"
    return None


_SUSPENDED = "the card is suspended: every check of it is recorded as SuspendedCardAttempted"


def _active(b: Before) -> Reason:
    return _SUSPENDED if b.state.suspended else None


def _checked(b: Before, t: PinType) -> Reason:
    """check_pin reaches the PIN check: enrolled, and neither a suspended card nor a locked PIN (guards.why_unchecked)."""
    if reason := _pin(b, t):
        return reason
    unchecked = guards.why_unchecked(b.state, t)
    if unchecked is guards.Unchecked.CARD_SUSPENDED:
        return _SUSPENDED
    if unchecked is guards.Unchecked.PIN_LOCKED:
        return f"the {t.value} PIN is locked: a locked PIN is never checked (LockedPinAttempted)"
    return None


def _reservation_settings(b: Before) -> tuple[bool, ...]:
    """What the reset app took for "a chain resets the user-certificate PIN"
    (guards.any_chain_resets_user_certificate): either without the policy."""
    return (False, True) if b.policy is None else (guards.any_chain_resets_user_certificate(b.policy),)


def _kiosk_settings(b: Before) -> tuple[bool, ...]:
    """What the kiosk's chain (not recorded) may have said: a chain that is
    not configured, or does not allow it, resets only the signature PIN."""
    if b.policy is None or guards.any_chain_resets_user_certificate(b.policy):
        return (False, True)
    return (False,)


def _kiosk_hours(b: Before) -> tuple[bool, ...]:
    """Was the kiosk open (guards.kiosk_open)? Either without the policy."""
    return (True, False) if b.policy is None else (guards.kiosk_open(b.policy, b.at),)


def _kiosk(b: Before, want_open: bool = True) -> Reason:
    """Kiosk hours (configuration: checked only with the policy)."""
    if b.policy is None or guards.kiosk_open(b.policy, b.at) == want_open:
        return None
    local = b.at.astimezone(TOKYO).time()
    hours = f"{b.policy.store_opens:%H:%M}-{b.policy.store_closes:%H:%M}"
    if want_open:
        return f"kiosks run {hours} Asia/Tokyo; this was at {local:%H:%M}"
    return f"refused as closed at {local:%H:%M}, within the kiosk hours {hours} Asia/Tokyo"


def _kiosk_answers(b: Before, t: PinType) -> set[tuple[RefusalReason | None, PinType | None]]:
    """What decide_store_reset could have answered to a reset of `t` here
    (guards.kiosk_refusal: a refusal, or None: it checks the proving PIN),
    with the proving PIN, for each chain and hours the stream allows."""
    return {
        (guards.kiosk_refusal(b.state, t, proving, b.at, is_open=is_open), proving)
        for proving in {guards.store_proving_pin(t, allows) for allows in _kiosk_settings(b)}
        for is_open in _kiosk_hours(b)
    }


def _kiosk_could_not(b: Before, t: PinType, answer: RefusalReason | None) -> str:
    """Why the kiosk could not have given `answer` to a reset of `t` (None:
    checked the proving PIN), in decide_store_reset's order."""
    answers = {a for a, _ in _kiosk_answers(b, t)}
    if answer is RefusalReason.STORE_CLOSED:
        return _kiosk(b, want_open=False) or "the kiosk was open"
    if answers == {RefusalReason.STORE_CLOSED}:
        return _kiosk(b) or "the kiosk was closed"
    if answer is RefusalReason.COUNTER_ONLY:
        return f"every store resets the {t.value} PIN"
    if answers == {RefusalReason.COUNTER_ONLY}:
        if answer is None:
            return f"no configured store chain resets the {t.value} PIN"
        return f"the {t.value} PIN is refused as counter only before a reservation is looked for"
    if b.state.suspended:
        return _SUSPENDED if answer is None else f"{_SUSPENDED}; the kiosk answers so before it looks for a reservation"
    reservation = b.state.reservations.get(t)
    if answer is RefusalReason.NO_RESERVATION:
        return f"a reservation for the {t.value} PIN is open (it would be used, or refused as expired)"
    if reservation is None:
        return f"no store reservation for the {t.value} PIN"
    if answer is RefusalReason.RESERVATION_EXPIRED:
        return f"the reservation is valid until {reservation.expires_at.isoformat()}"
    return f"the reservation expired at {reservation.expires_at.isoformat()}"


def _kiosk_checks(b: Before, proving: PinType) -> Reason:
    """The kiosk checks `proving` only for a reset of a PIN of this card it does not refuse first (guards.kiosk_refusal)."""
    answers = {a for t in PinType if guards.pin_set(b.state, t) for a, p in _kiosk_answers(b, t) if p is proving}
    if None in answers:
        return None
    if not answers:
        return f"the {proving.value} PIN proves no store reset of a PIN this card has"
    if reason := _kiosk(b):
        return reason
    for reservation in b.state.reservations.values():
        if reservation.proving_pin_type is proving:
            return f"the reservation proved by the {proving.value} PIN expired at {reservation.expires_at.isoformat()}"
    return f"no store reservation is proved by the {proving.value} PIN: the kiosk checks a PIN only for one"


def _reservation_proving(b: Before, t: PinType) -> set[PinType | None]:
    """The PIN the reset app could have checked to reserve a reset of `t`
    (guards.reservation_proving_pin; None: refused as counter only)."""
    return {guards.reservation_proving_pin(b.state, t, allows) for allows in _reservation_settings(b)}


def _reservation_checks(b: Before, proving: PinType) -> Reason:
    """The reset app checks `proving` only to reserve a reset of a PIN this card has."""
    if any(proving in _reservation_proving(b, t) for t in PinType if guards.pin_set(b.state, t)):
        return None
    return f"the {proving.value} PIN proves no store reset of a PIN this card has"


def _purpose(b: Before, t: PinType, purpose: Purpose) -> Reason:
    """What the purpose of a check adds: a store procedure's proving PIN."""
    if purpose is Purpose.STORE_RESERVATION:
        return _reservation_checks(b, t)
    if purpose is Purpose.STORE_RESET:
        return _kiosk_checks(b, t)
    return None


def _documents(b: Before, procedure: CounterProcedure, applicant: str, documents: tuple[str, ...]) -> Reason:
    """The recorded checklist is complete (guards.checklist_gaps). Issue
    dates and the adult-ward flag are not recorded: taken as fresh, either flag."""
    try:
        who = Applicant(applicant)
    except ValueError:
        return f"unknown applicant {applicant!r}"
    allowed = CHECKLISTS[procedure].applicants
    if who not in allowed:
        return f"a {applicant} cannot apply for this ({', '.join(a.value for a in allowed)} can)"
    try:
        types = [DocumentType(d) for d in documents]
    except ValueError:
        return f"unknown document type among {list(documents)}"
    docs = tuple(Document(t, guards.day_of(b.at)) for t in types)
    gaps = [guards.checklist_gaps(procedure, who, docs, b.at, adult_ward=ward) for ward in (False, True)]
    if any(not g for g in gaps):
        return None
    return "the recorded checklist is incomplete: " + ", ".join(v.subject for v in gaps[0])


def _instant(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo is not None else None


def _expiry(b: Before, expires_at: str, expiry: Callable[[Policy, datetime], datetime]) -> Reason:
    """The recorded expiry is an instant; with the policy, the configured one (guards.inquiry_expiry, guards.reservation_expiry)."""
    at = _instant(expires_at)
    if at is None:
        return f"expires_at {expires_at!r} is not an instant with a UTC offset"
    if b.policy is not None and at != (expected := expiry(b.policy, b.at)):
        return f"expires_at {expires_at} is not the configured validity ({expected - b.at}) after {b.at.isoformat()}"
    return None


def _fresh_id(b: Before, new_id: str) -> Reason:
    if new_id in b.ids:
        return f"the id {new_id} was issued before in this stream: every inquiry and reservation gets a fresh id"
    return None


def _right_after(b: Before, what: str, matches: Callable[[Event], bool]) -> Reason:
    """The event just before is `what`, of the same command (same occurred-at)."""
    p = b.previous
    if p is None or not matches(p.event):
        got = p.event.type_name if p else "nothing"
        return f"it comes only right after {what} in the same command; the event before is {got}"
    if p.occurred_at != b.at:
        return f"it comes in the same command as {what}, at the same instant; that was at {p.occurred_at.isoformat()}"
    return None


def _open_inquiry(b: Before, t: PinType, inquiry_id: str | None = None, *, live: bool = True) -> Reason:
    inquiry = b.state.inquiries.get(t)
    if inquiry is None:
        return f"no proxy inquiry is open for the {t.value} PIN"
    if inquiry_id is not None and inquiry.inquiry_id != inquiry_id:
        return f"the open inquiry for the {t.value} PIN is {inquiry.inquiry_id}, not {inquiry_id}"
    if live and guards.expired(inquiry.expires_at, b.at):
        return f"the inquiry expired at {inquiry.expires_at.isoformat()}: the rules close it as expired instead"
    return None


def _counter_could_not(e: Event, r: Recorded, state: CardState, policy: Policy) -> Reason:
    """An event a counter recorded (its office is on it) was decided in the
    office's hours, for a ward it serves (guards.counter_refusal): a counter
    is gated whatever it asks (decision.counter_gate)."""
    if r.office is None:
        return None
    ward = e.ward if isinstance(e, CardEnrolled) else state.ward
    refusal = guards.counter_refusal(policy, r.office, ward, r.occurred_at)
    if refusal is None:
        return None
    local = r.occurred_at.astimezone(TOKYO)
    return f"recorded by office {r.office} at {local:%Y-%m-%d %H:%M} Asia/Tokyo, when it could not act ({refusal.value})"


# -- one rule per event type ----------------------------------------------------------
def _card_enrolled(e: CardEnrolled, b: Before) -> Reason:
    if b.state.enrolled:
        return "the card is already enrolled: a card is enrolled once"
    if not e.pin_types:
        return "an enrolment sets at least one PIN"
    if len(set(e.pin_types)) != len(e.pin_types):
        return "an enrolment sets each PIN type once"
    if e.ward is not None and not WARD_ID.fullmatch(e.ward):
        return f"ward {e.ward!r} is not a ward id"
    if b.policy is not None and not guards.ward_served(b.policy, e.ward):
        return f"ward {e.ward!r} is served by no office"
    return None


def _pin_verified(e: PinVerified, b: Before) -> Reason:
    return _checked(b, e.pin_type)


def _pin_verification_failed(e: PinVerificationFailed, b: Before) -> Reason:
    if reason := _checked(b, e.pin_type) or _purpose(b, e.pin_type, e.purpose):
        return reason
    pin, limit = b.state.pins[e.pin_type], retry_limit(e.pin_type)
    failures, remaining = guards.wrong_entry(pin)
    if e.consecutive_failures != failures:
        return (
            f"it records {e.consecutive_failures} consecutive failures of the {e.pin_type.value} PIN, which had "
            f"{pin.consecutive_failures}: a wrong entry adds exactly one"
        )
    if guards.locks(e.pin_type, pin.consecutive_failures):
        return f"failures of the {e.pin_type.value} PIN count past its limit of {limit} without a lock"
    if e.remaining_tries != remaining:
        return f"it records {e.remaining_tries} remaining tries; {limit} - {e.consecutive_failures} remain"
    return None


def _then_lock(e: PinVerificationFailed) -> Then | None:
    if not guards.locks(e.pin_type, e.consecutive_failures):
        return None
    t = e.pin_type
    return Then(f"PinLocked of the {t.value} PIN", lambda n: type(n) is PinLocked and n.pin_type is t)


def _pin_locked(e: PinLocked, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t) or _active(b):
        return reason
    pin, limit = b.state.pins[t], retry_limit(t)
    if pin.locked:
        return f"the {t.value} PIN is already locked"
    if reason := _right_after(
        b,
        f"the failure that reaches the limit of {limit} (the PIN had {pin.consecutive_failures} consecutive failures)",
        lambda p: type(p) is PinVerificationFailed and p.pin_type is t and guards.locks(t, p.consecutive_failures),
    ):
        return f"a PIN locks only at its limit of consecutive failures: {reason}"
    if e.consecutive_failures != pin.consecutive_failures:
        return f"it records {e.consecutive_failures} consecutive failures; the {t.value} PIN locked at {pin.consecutive_failures}"
    return None


def _counted(e: Any) -> Reason:
    """An aggregated event's count (repeats.py) is never negative."""
    return f"a negative count of repeats ({e.repeated})" if e.repeated < 0 else None


def _locked_pin_attempted(e: LockedPinAttempted, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t) or _counted(e):
        return reason
    unchecked = guards.why_unchecked(b.state, t)
    if unchecked is guards.Unchecked.CARD_SUSPENDED:
        return _SUSPENDED
    if unchecked is not guards.Unchecked.PIN_LOCKED:
        return f"the {t.value} PIN is not locked: an attempt against it would have been checked"
    return _purpose(b, t, e.purpose)


def _pin_changed(e: PinChanged, b: Before) -> Reason:
    return _checked(b, e.pin_type)


def _pin_reset(e: PinReset, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t):
        return reason
    procedure = known_word(ResetProcedure, e.procedure)
    if procedure is ResetProcedure.COUNTER:
        return _documents(b, CounterProcedure.RESET, e.applicant, e.documents)
    if procedure is ResetProcedure.PROXY:
        return (
            _documents(b, CounterProcedure.PROXY_COMPLETION, e.applicant, e.documents)
            or _open_inquiry(b, t)
            or _codes_checked_today(b, t)
        )
    if procedure is ResetProcedure.CONVENIENCE_STORE:
        return _store_reset(e, b)
    return f"unknown reset procedure {str(e.procedure)!r}"


def _codes_exhausted(b: Before, t: PinType) -> Reason:
    """Refused at the day's bound of wrong codes (guards.proxy_codes_exhausted):
    with the policy, the bound is reached; without it, at least one wrong code
    was counted that day (the bound is at least 1)."""
    count = guards.wrong_codes_today(b.state, t, b.at)
    if b.policy is None:
        return None if count > 0 else f"the {t.value} PIN took no wrong proxy code on {guards.day_of(b.at)} (Asia/Tokyo)"
    if guards.proxy_codes_exhausted(b.policy, b.state, t, b.at):
        return None
    bound = b.policy.proxy_wrong_codes_per_day
    return (
        f"the {t.value} PIN took {count} wrong proxy codes on {guards.day_of(b.at)}, below the configured daily bound of {bound}"
    )


def _codes_checked_today(b: Before, t: PinType) -> Reason:
    """A proxy code is checked only below the day's bound of wrong codes
    (guards.proxy_codes_exhausted; configuration: checked only with the policy)."""
    if b.policy is None or not guards.proxy_codes_exhausted(b.policy, b.state, t, b.at):
        return None
    count = guards.wrong_codes_today(b.state, t, b.at)
    return (
        f"the {t.value} PIN took {count} wrong proxy codes on {guards.day_of(b.at)} (Asia/Tokyo), the configured "
        f"daily bound of {b.policy.proxy_wrong_codes_per_day}: no code is checked until the next day"
    )


def _store_reset(e: PinReset, b: Before) -> Reason:
    t = e.pin_type
    if e.applicant != Applicant.HOLDER.value or e.documents:
        return "a kiosk reset is the holder's, with no documents"
    provers = {proving for answer, proving in _kiosk_answers(b, t) if answer is None}
    if not provers or b.state.suspended:  # a suspended card's check is recorded, never passed
        return _kiosk_could_not(b, t, None)
    return _proved_just_before(b, b.state.reservations[t].proving_pin_type)


def _proved_just_before(b: Before, proving: PinType) -> Reason:
    """A store procedure checks its proving PIN, then acts, in one command."""
    return _right_after(b, f"PinVerified of the {proving.value} PIN", lambda p: type(p) is PinVerified and p.pin_type is proving)


def _pin_unlocked(e: PinUnlocked, b: Before) -> Reason:
    return _pin(b, e.pin_type) or _documents(b, CounterProcedure.UNLOCK, e.applicant, e.documents)


def _counter_procedure_refused(e: CounterProcedureRefused, b: Before) -> Reason:
    procedure = known_word(CounterProcedure, e.procedure)
    if procedure is None:
        return f"unknown counter procedure {str(e.procedure)!r}"
    if e.pin_type is not None:  # None: resuming a card (for no PIN), or a v1 refusal that did not record it
        if procedure is CounterProcedure.RESUME:
            return "resuming a card is for no PIN: its refusal names none"
        if reason := _pin(b, e.pin_type):
            return reason
    if reason := _counted(e):
        return reason
    if not e.missing:
        return "a refusal names what is missing"
    if len(set(e.missing)) != len(e.missing) or not set(e.missing) <= guards.refusable_subjects(procedure):
        return f"a {procedure} checklist cannot miss {list(e.missing)}"
    return None


def _card_suspended(e: CardSuspended, b: Before) -> Reason:
    if b.state.suspended:
        return "the card is already suspended: a second suspend records nothing"
    if e.reason not in SUSPEND_REASONS:
        return f"unknown suspension reason {e.reason!r}"
    return None


def _card_resumed(e: CardResumed, b: Before) -> Reason:
    if not b.state.suspended:
        return "the card is active: resuming an active card records nothing"
    return _documents(b, CounterProcedure.RESUME, e.applicant, e.documents)


def _suspended_card_attempted(e: SuspendedCardAttempted, b: Before) -> Reason:
    if reason := _pin(b, e.pin_type) or _counted(e):
        return reason
    if guards.why_unchecked(b.state, e.pin_type) is not guards.Unchecked.CARD_SUSPENDED:
        return "the card is active: an attempt on it would have been checked"
    return _purpose(b, e.pin_type, e.purpose)


def _proxy_inquiry_issued(e: ProxyInquiryIssued, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t):
        return reason
    if (open_ := b.state.inquiries.get(t)) is not None:
        return f"inquiry {open_.inquiry_id} is still open for the {t.value} PIN: a new one is issued after closing it"
    return (
        _documents(b, CounterProcedure.PROXY_INQUIRY, Applicant.PROXY.value, e.documents)
        or _expiry(b, e.expires_at, guards.inquiry_expiry)
        or _fresh_id(b, e.inquiry_id)
    )


def _proxy_inquiry_closed(e: ProxyInquiryClosed, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t) or _open_inquiry(b, t, e.inquiry_id, live=False):
        return reason
    closed = known_word(InquiryCloseReason, e.reason)
    if closed is InquiryCloseReason.SUPERSEDED:
        expires = b.state.inquiries[t].expires_at
        if b.policy is not None and guards.inquiry_reissue_refused(b.policy, expires, b.at):
            return f"inquiry {e.inquiry_id} was issued less than {b.policy.inquiry_reissue_after} before: a new one is refused"
        return None  # the new inquiry must follow (then)
    if closed is InquiryCloseReason.EXPIRED:
        expires = b.state.inquiries[t].expires_at
        if not guards.expired(expires, b.at):
            return f"the inquiry expires only at {expires.isoformat()}"
        return None
    if closed is InquiryCloseReason.VOIDED:
        return _right_after(
            b,
            f"the wrong code that uses the last attempt of inquiry {e.inquiry_id}",
            lambda p: type(p) is ProxyInquiryCodeRejected and p.inquiry_id == e.inquiry_id and guards.inquiry_voided(p.remaining),
        )
    return f"unknown reason {str(e.reason)!r} to close an inquiry"


def _then_issue(e: ProxyInquiryClosed) -> Then | None:
    if known_word(InquiryCloseReason, e.reason) is not InquiryCloseReason.SUPERSEDED:
        return None
    t = e.pin_type
    return Then(f"ProxyInquiryIssued for the {t.value} PIN", lambda n: type(n) is ProxyInquiryIssued and n.pin_type is t)


def _proxy_inquiry_code_rejected(e: ProxyInquiryCodeRejected, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t) or _open_inquiry(b, t, e.inquiry_id):
        return reason
    inquiry = b.state.inquiries[t]
    if e.wrong_codes != inquiry.wrong_codes + 1:
        return f"it records {e.wrong_codes} wrong codes; the inquiry had {inquiry.wrong_codes}: a wrong code adds one"
    if e.remaining < 0:
        return "a negative number of remaining attempts"
    if b.policy is not None and e.remaining != guards.inquiry_attempts_left(b.policy, e.wrong_codes):
        limit = b.policy.inquiry_max_wrong_codes
        return f"{e.remaining} attempts remain after {e.wrong_codes} wrong codes of the configured {limit}"
    return _wrong_code_counted(e, b)


def _wrong_code_counted(e: ProxyInquiryCodeRejected, b: Before) -> Reason:
    """A wrong code adds one to the card's count for its PIN type and Tokyo
    day, across inquiries (guards.wrong_code_today); a code is checked only
    below the day's bound (with the policy). 0: an event from before the
    count, which cannot follow a counted one."""
    t = e.pin_type
    if e.wrong_codes_today == 0:
        if b.state.code_days:
            return "a wrong code without the day's count (as recorded before the daily bound) after counted ones"
        return None
    expected = guards.wrong_code_today(b.state, t, b.at)
    if e.wrong_codes_today != expected:
        return (
            f"it records {e.wrong_codes_today} wrong codes on {guards.day_of(b.at)} (Asia/Tokyo); the {t.value} PIN had "
            f"{expected - 1} that day: a wrong code adds one, across inquiries"
        )
    return _codes_checked_today(b, t)


def _then_void(e: ProxyInquiryCodeRejected) -> Then | None:
    if not guards.inquiry_voided(e.remaining):
        return None
    i = e.inquiry_id
    return Then(
        f"ProxyInquiryClosed (voided) of inquiry {i}",
        lambda n: type(n) is ProxyInquiryClosed and n.inquiry_id == i and n.reason == InquiryCloseReason.VOIDED,
    )


def _store_reset_reserved(e: StoreResetReserved, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t) or _active(b):
        return reason
    try:
        proving = PinType(e.proving_pin_type)
    except ValueError:
        return f"unknown proving PIN type {e.proving_pin_type!r}"
    if proving not in _reservation_proving(b, t):
        expected = {guards.store_proving_pin(t, allows) for allows in _reservation_settings(b)} - {None}
        if not expected:
            return f"the {t.value} PIN is reset only at a counter"
        if proving not in expected:
            names = " or ".join(sorted(p.value for p in expected if p is not None))
            return f"a store reset of the {t.value} PIN is proved by the {names} PIN, not {proving.value}"
        return _pin(b, proving)
    return (
        _proved_just_before(b, proving) or _expiry(b, e.expires_at, guards.reservation_expiry) or _fresh_id(b, e.reservation_id)
    )


def _reset_refused(e: ResetRefused, b: Before) -> Reason:
    t = e.pin_type
    if reason := _pin(b, t) or _counted(e):
        return reason
    procedure, refusal = known_word(ResetProcedure, e.procedure), known_word(RefusalReason, e.reason)
    if (procedure, refusal) == (ResetProcedure.PROXY, RefusalReason.NO_OPEN_INQUIRY):
        return None  # the inquiry id asked for is not recorded: any state allows it
    if (procedure, refusal) == (ResetProcedure.PROXY, RefusalReason.PROXY_CODES_EXHAUSTED):
        return _open_inquiry(b, t) or _codes_exhausted(b, t)
    if (procedure, refusal) == (ResetProcedure.PROXY_INQUIRY, RefusalReason.INQUIRY_OPEN):
        if reason := _open_inquiry(b, t):
            return f"a new inquiry is refused only while one is open: {reason}"
        expires = b.state.inquiries[t].expires_at
        if b.policy is not None and not guards.inquiry_reissue_refused(b.policy, expires, b.at):
            return f"the open inquiry was issued {b.policy.inquiry_reissue_after} or more before: a new one supersedes it"
        return None
    if (procedure, refusal) == (ResetProcedure.STORE_RESERVATION, RefusalReason.COUNTER_ONLY):
        if None in _reservation_proving(b, t):
            return None
        names = " or ".join(sorted(p.value for p in _reservation_proving(b, t) if p is not None))
        return f"the {t.value} PIN can be reserved for a store reset by the {names} PIN"
    if procedure is ResetProcedure.CONVENIENCE_STORE and refusal is not None:
        if refusal in {answer for answer, _ in _kiosk_answers(b, t)}:
            return None
        if refusal in guards.KIOSK_REFUSALS:
            return _kiosk_could_not(b, t, refusal)
    return f"no rule refuses a {e.procedure} procedure with {str(e.reason)!r}"


NOT_CHECKABLE_CHECK = "whether the PIN entered was right (verifiers are not in the stream)"
NOT_CHECKABLE_COUNTER = (
    "without the policy, the office's hours and wards; the documents' issue dates "
    "(authority within 3 months) and whether the holder is an adult ward (not recorded)"
)

# event type -> its rule. Every card event type has one (tests/unit/test_lawful.py).
RULES: dict[type[Event], Rule] = {
    CardEnrolled: Rule(_card_enrolled, _nothing, "nothing: decide_enroll requires only a card not yet enrolled"),
    PinVerified: Rule(
        _pin_verified,
        _nothing,
        f"{NOT_CHECKABLE_CHECK}; whether it was a verify or a store procedure's proving PIN (no purpose recorded)",
    ),
    PinVerificationFailed: Rule(_pin_verification_failed, _then_lock, f"{NOT_CHECKABLE_CHECK}; kiosk hours without the policy"),
    PinLocked: Rule(_pin_locked, _nothing, "nothing: it follows the failure at the limit in the same command"),
    LockedPinAttempted: Rule(_locked_pin_attempted, _nothing, "kiosk hours without the policy"),
    PinChanged: Rule(_pin_changed, _nothing, "whether the current PIN was right (verifiers are not in the stream)"),
    PinReset: Rule(
        _pin_reset,
        _nothing,
        f"counter: {NOT_CHECKABLE_COUNTER}; proxy: the inquiry code (a secret) and the office, the daily bound "
        "of wrong codes without the policy; "
        "store: the proving PIN's correctness, the chain's setting (chain id not recorded), kiosk hours without policy. "
        "The PIN need not be locked nor the card active for a counter or proxy reset: the deciders do not require it",
    ),
    PinUnlocked: Rule(
        _pin_unlocked, _nothing, f"{NOT_CHECKABLE_COUNTER}. The PIN need not be locked: decide_unlock does not require it"
    ),
    CounterProcedureRefused: Rule(
        _counter_procedure_refused,
        _nothing,
        "the applicant and the documents presented; the office's hours without the policy; "
        "the PIN type of a v1 refusal (not recorded)",
    ),
    CardSuspended: Rule(
        _card_suspended,
        _nothing,
        "the office's hours without the policy (the call centre has none); the terminal's bound of suspensions "
        "per window (the terminal is not in Recorded: decided on its own row, refusals on its stream as SuspensionRefused)",
    ),
    CardResumed: Rule(_card_resumed, _nothing, NOT_CHECKABLE_COUNTER),
    SuspendedCardAttempted: Rule(
        _suspended_card_attempted, _nothing, "kiosk hours without the policy; nothing about the PIN (it is never checked)"
    ),
    ProxyInquiryIssued: Rule(_proxy_inquiry_issued, _nothing, f"{NOT_CHECKABLE_COUNTER}; the validity without the policy"),
    ProxyInquiryClosed: Rule(
        _proxy_inquiry_closed,
        _then_issue,
        "the office's hours without the policy; without the policy, when a superseded inquiry was issued",
    ),
    ProxyInquiryCodeRejected: Rule(
        _proxy_inquiry_code_rejected,
        _then_void,
        "whether the code was wrong (a secret); the documents at the second visit (not recorded in it); "
        "the attempts left and the daily bound of wrong codes without the policy",
    ),
    StoreResetReserved: Rule(
        _store_reset_reserved,
        _nothing,
        "the proving PIN's correctness; without the policy, whether a chain resets the user-certificate PIN and the validity",
    ),
    ResetRefused: Rule(
        _reset_refused,
        _nothing,
        "proxy: the inquiry id asked for and the documents (not recorded), the daily bound of wrong codes "
        "without the policy; proxy inquiry: when the open one was issued without the policy; store: the chain (not recorded), the hours without the policy",
    ),
}

# Events of a terminal's stream (streams.py), never of a card's.
TERMINAL_EVENTS: frozenset[type[Event]] = frozenset(
    {AccessDenied, AuditRead, CounterOutOfService, RepeatsCounted, SuspensionRefused, TerminalThrottled}
)


# -- the fold --------------------------------------------------------------------------
def first_unlawful(
    stream: Iterable[Recorded], *, policy: Policy | None = None, clock_tolerance: timedelta | None = timedelta(0)
) -> Unlawful | None:
    """The first event of a card's stream (in version order, as stored) that
    the rules could not have produced from the state the earlier events lead
    to; None if every event is lawful.

    policy: the configuration the stream was decided under, to check the
    rules that depend on it too (leave it None if it may have changed).
    clock_tolerance: how far occurred-at may step back (several instances'
    clocks, a wall clock stepped back); zero by default. None: time order is
    not judged here (the whole-store check reports a clock step apart:
    first_clock_step)."""
    state = CardState("")
    previous: Recorded | None = None
    pending: tuple[Recorded, Then] | None = None  # an event still waiting for its follower
    ids: set[str] = set()
    for r in stream:
        e = r.event
        unlawful = partial(Unlawful, r.version, e.type_name)
        if r.version != state.version + 1:
            return unlawful(f"versions run 1, 2, ...: expected {state.version + 1}, got {r.version}")
        if clock_tolerance is not None and previous is not None and _steps_back(previous, r, clock_tolerance):
            return unlawful(
                f"occurred at {r.occurred_at.isoformat()}, before version {previous.version} "
                f"({previous.occurred_at.isoformat()}): time does not go back"
            )
        if pending is not None:
            first, then = pending
            if not then.matches(e) or r.occurred_at != first.occurred_at:
                return unlawful(
                    f"version {first.version} ({first.event.type_name}) is followed in the same command by "
                    f"{then.what}, at the same instant"
                )
            pending = None
        if not state.enrolled and type(e) is not CardEnrolled:
            return unlawful("the first event of a card stream is CardEnrolled")
        if policy is not None and (reason := _counter_could_not(e, r, state, policy)):
            return unlawful(reason)
        rule = RULES.get(type(e))
        if rule is None:
            where = "a terminal's stream" if type(e) in TERMINAL_EVENTS else "no card stream (no rule)"
            return unlawful(f"{e.type_name} belongs to {where}")
        if reason := rule.requires(e, Before(state, r.occurred_at, previous, policy, ids)):
            return unlawful(reason)
        try:
            state = evolve(state, r)
        except Exception as exc:  # a payload the fold cannot apply is not lawful either
            return unlawful(f"the fold cannot apply it: {exc!r}")
        if (follower := rule.then(e)) is not None:
            pending = (r, follower)
        if type(e) is ProxyInquiryIssued:
            ids.add(e.inquiry_id)
        elif type(e) is StoreResetReserved:
            ids.add(e.reservation_id)
        previous = r
    if pending is not None:
        first, then = pending
        reason = f"the stream ends before {then.what}, which follows it in the same command"
        return Unlawful(first.version, first.event.type_name, reason)
    return None


@dataclass(frozen=True)
class ClockStep:
    """An event whose occurred-at is before its predecessor's by more than
    the tolerated skew: a clock stepped back, or instances whose clocks
    differ more than configured. Not a rule broken: the log's order is its
    positions, and occurred-at is the deciding instance's wall clock."""

    version: int
    seconds_back: float


# Instances' clocks differ a little: a stream may step back this much before
# the whole-store check reports a clock step (the default of [audit] clock_skew_seconds).
CLOCK_TOLERANCE = timedelta(seconds=5)


def _steps_back(previous: Recorded, r: Recorded, tolerance: timedelta) -> bool:
    """r occurred before the event before it by more than `tolerance`."""
    return r.occurred_at < previous.occurred_at - tolerance


def first_clock_step(stream: Iterable[Recorded], tolerance: timedelta) -> ClockStep | None:
    """The first event of a stream that steps back in time by more than `tolerance`."""
    previous: Recorded | None = None
    for r in stream:
        if previous is not None and _steps_back(previous, r, tolerance):
            return ClockStep(r.version, (previous.occurred_at - r.occurred_at).total_seconds())
        previous = r
    return None
