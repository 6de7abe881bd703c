"""The reset procedures (DESIGN.md §2): at a counter (reset, unlock, the
proxy's two visits, suspend and resume) and at a convenience store (the
reset app's reservation, the kiosk's completion). Each is a `decide_*`
function of (state, command, context); decide.decide picks each by command.
What the deciders share (Decision, Context, check_pin, the enrolled / PIN-set
requirements) is in decision.py; the rules the lawful-history check applies
too are guards (guards.py), named below.

- a counter acts only during its office's hours and only for wards its
  office serves: decide.decide gates every command a counter sends before
  its rule runs (decision.counter_gate, guards.counter_refusal).
- checklist: an incomplete or stale checklist is refused, naming every
  missing document, and recorded on the card's stream
  (guards.checklist_gaps; documents.py).
- decide_suspend: a terminal makes at most the configured number of
  suspensions per window (guards.suspension_free_at, over the terminal's
  own record of them in ctx.suspensions); beyond, refused and recorded on
  the terminal's stream, no card touched.
- decide_request_proxy / decide_complete_proxy: one open inquiry per card
  and PIN type (a new one supersedes the old); used once; expires
  (guards.inquiry_expiry, guards.expired); voided at the configured number
  of wrong codes (guards.inquiry_attempts_left, guards.inquiry_voided); a
  card and PIN type take a bounded number of wrong codes per Tokyo day,
  across inquiries: beyond, a completion is refused and recorded without
  its code being checked (guards.proxy_codes_exhausted); a new inquiry
  while the open one was issued less than `inquiry_reissue_after` ago is
  refused (guards.inquiry_reissue_refused), so re-issuing cannot append a
  pair of events per call.
- decide_reserve_store / decide_store_reset: which PIN proves which
  (guards.reservation_proving_pin, guards.store_proving_pin); a wrong
  proving PIN is a failed try of that PIN (decision.check_pin); the
  reservation lasts its validity (guards.reservation_expiry); the kiosk's
  refusals, hours first (guards.kiosk_refusal, guards.kiosk_open).
"""

from __future__ import annotations

from datetime import datetime

from . import guards
from .calendar import TOKYO
from .commands import (
    CompleteProxyReset,
    RequestProxyReset,
    ReserveStoreReset,
    ResetPin,
    ResumeCard,
    StoreResetPin,
    SuspendCard,
    UnlockPin,
)
from .decision import Context, Decision, Refusal, check_pin, require_enrolled, require_pin
from .documents import Applicant, Document
from .errors import LimitReached, PreconditionFailed, PreconditionViolation
from .events import (
    CardResumed,
    CardSuspended,
    CounterProcedure,
    CounterProcedureRefused,
    Event,
    InquiryCloseReason,
    PinReset,
    PinUnlocked,
    ProxyInquiryClosed,
    ProxyInquiryCodeRejected,
    ProxyInquiryIssued,
    Purpose,
    RefusalReason,
    ResetProcedure,
    ResetRefused,
    StoreResetReserved,
    SuspensionRefused,
)
from .outcomes import (
    CardStatusChanged,
    CheckResult,
    InquiryIssued,
    PinRestored,
    ProxyCompletion,
    ProxyResult,
    StoreReservation,
    StoreReset,
)
from .pins import PinType, normalize_pin
from .state import CardState, CardStatus

INQUIRY_CODE_KIND = "inquiry_code"  # the secret kind of an inquiry's one-time code


# -- shared rules --------------------------------------------------------------
def _checklist(
    procedure: CounterProcedure,
    pin_type: PinType | None,
    applicant: Applicant,
    documents: tuple[Document, ...],
    ctx: Context,
    *,
    adult_ward: bool = False,
) -> Refusal | None:
    """A recorded refusal naming every missing or stale document, and the
    PIN type the procedure was for (None: resuming a card, for no PIN), or None."""
    violations = guards.checklist_gaps(procedure, applicant, documents, ctx.now, adult_ward=adult_ward)
    if not violations:
        return None
    refused = CounterProcedureRefused(procedure, tuple(v.subject for v in violations), pin_type)
    return Decision((refused,), None, error=PreconditionFailed(violations))


def _doc_types(documents: tuple[Document, ...]) -> tuple[str, ...]:
    return tuple(d.type.value for d in documents)


# -- counter -------------------------------------------------------------------
def decide_reset(state: CardState, cmd: ResetPin, ctx: Context) -> Decision[PinRestored]:
    require_pin(state, cmd.pin_type)
    if refusal := _checklist(CounterProcedure.RESET, cmd.pin_type, cmd.applicant, cmd.documents, ctx, adult_ward=cmd.adult_ward):
        return refusal
    event = PinReset(cmd.pin_type, ResetProcedure.COUNTER, cmd.applicant.value, _doc_types(cmd.documents))
    return Decision((event,), PinRestored(cmd.pin_type), {cmd.pin_type: cmd.new_pin})


def decide_unlock(state: CardState, cmd: UnlockPin, ctx: Context) -> Decision[PinRestored]:
    require_pin(state, cmd.pin_type)
    if refusal := _checklist(CounterProcedure.UNLOCK, cmd.pin_type, cmd.applicant, cmd.documents, ctx, adult_ward=cmd.adult_ward):
        return refusal
    event = PinUnlocked(cmd.pin_type, cmd.applicant.value, _doc_types(cmd.documents))
    return Decision((event,), PinRestored(cmd.pin_type))


def _tokyo(at: datetime) -> str:
    return at.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S")


def suspension_bound(state: CardState, ctx: Context) -> Refusal | None:
    """A refusal when the terminal has made its bound of suspensions within
    the window (guards.suspension_free_at), recorded on its stream; decided
    before the card is looked at, so a refused terminal learns nothing of it."""
    free_at = guards.suspension_free_at(ctx.policy, ctx.suspensions, ctx.now)
    if free_at is None:
        return None
    bound, window = ctx.policy.suspensions_per_window, ctx.policy.suspension_window
    minutes = int(window.total_seconds() // 60)
    message = (
        f"this terminal has suspended {bound} cards within {minutes} minutes, its bound; "
        f"it may suspend again from {_tokyo(free_at)} (Asia/Tokyo)"
    )
    refused = SuspensionRefused(state.card_id, bound, int(window.total_seconds()), free_at.isoformat())
    error = LimitReached("terminal/suspensions", message, free_at - ctx.now)
    return Decision((), None, terminal_events=(refused,), error=error)


def decide_suspend(state: CardState, cmd: SuspendCard, ctx: Context) -> Decision[CardStatusChanged]:
    if bound := suspension_bound(state, ctx):
        return bound
    require_enrolled(state)
    if state.suspended:  # already: nothing happens, the answer says so
        return Decision((), CardStatusChanged(CardStatus.SUSPENDED))
    return Decision((CardSuspended(cmd.reason),), CardStatusChanged(CardStatus.SUSPENDED))


def decide_resume(state: CardState, cmd: ResumeCard, ctx: Context) -> Decision[CardStatusChanged]:
    require_enrolled(state)
    if refusal := _checklist(CounterProcedure.RESUME, None, cmd.applicant, cmd.documents, ctx, adult_ward=cmd.adult_ward):
        return refusal
    if not state.suspended:
        return Decision((), CardStatusChanged(CardStatus.ACTIVE))
    event = CardResumed(cmd.applicant.value, _doc_types(cmd.documents))
    return Decision((event,), CardStatusChanged(CardStatus.ACTIVE))


def decide_request_proxy(state: CardState, cmd: RequestProxyReset, ctx: Context) -> Decision[InquiryIssued]:
    require_pin(state, cmd.pin_type)
    if refusal := _checklist(CounterProcedure.PROXY_INQUIRY, cmd.pin_type, Applicant.PROXY, cmd.documents, ctx):
        return refusal
    old = state.inquiries.get(cmd.pin_type)
    if old is not None and guards.inquiry_reissue_refused(ctx.policy, old.expires_at, ctx.now):
        after = (old.expires_at - ctx.policy.inquiry_validity + ctx.policy.inquiry_reissue_after).astimezone(TOKYO)
        message = (
            f"inquiry {old.inquiry_id} for this PIN is open; a new one can be issued from {after:%Y-%m-%d %H:%M} (Asia/Tokyo)"
        )
        refused = ResetRefused(cmd.pin_type, ResetProcedure.PROXY_INQUIRY, RefusalReason.INQUIRY_OPEN)
        subject = f"{state.card_id}/{cmd.pin_type.value}"
        violation = PreconditionViolation(RefusalReason.INQUIRY_OPEN.violation_type, subject, message)
        return Decision((refused,), None, error=PreconditionFailed(violation))
    events: list[Event] = []
    if old is not None:
        events.append(ProxyInquiryClosed(cmd.pin_type, old.inquiry_id, InquiryCloseReason.SUPERSEDED))
    inquiry_id, code = ctx.new_id(), ctx.new_code()
    expires_at = guards.inquiry_expiry(ctx.policy, ctx.now)
    events.append(ProxyInquiryIssued(cmd.pin_type, inquiry_id, expires_at.isoformat(), _doc_types(cmd.documents)))
    return Decision(
        tuple(events), InquiryIssued(inquiry_id, expires_at, code), new_secrets={(INQUIRY_CODE_KIND, inquiry_id): code}
    )


def decide_complete_proxy(state: CardState, cmd: CompleteProxyReset, ctx: Context) -> Decision[ProxyCompletion]:
    require_pin(state, cmd.pin_type)
    if refusal := _checklist(CounterProcedure.PROXY_COMPLETION, cmd.pin_type, Applicant.PROXY, cmd.documents, ctx):
        return refusal
    inquiry = state.inquiries.get(cmd.pin_type)
    if inquiry is None or inquiry.inquiry_id != cmd.inquiry_id:
        refused = ResetRefused(cmd.pin_type, ResetProcedure.PROXY, RefusalReason.NO_OPEN_INQUIRY)
        return Decision((refused,), ProxyCompletion(ProxyResult.NO_OPEN_INQUIRY, 0))
    if guards.expired(inquiry.expires_at, ctx.now):
        closed = ProxyInquiryClosed(cmd.pin_type, inquiry.inquiry_id, InquiryCloseReason.EXPIRED)
        return Decision((closed,), ProxyCompletion(ProxyResult.EXPIRED, 0))
    if guards.proxy_codes_exhausted(ctx.policy, state, cmd.pin_type, ctx.now):
        return _codes_exhausted(state, cmd, ctx)
    if not ctx.code_matches(INQUIRY_CODE_KIND, inquiry.inquiry_id, cmd.code):
        wrong = inquiry.wrong_codes + 1
        left = guards.inquiry_attempts_left(ctx.policy, wrong)
        today = guards.wrong_code_today(state, cmd.pin_type, ctx.now)
        rejected = ProxyInquiryCodeRejected(cmd.pin_type, inquiry.inquiry_id, wrong, left, today)
        if guards.inquiry_voided(left):
            voided = ProxyInquiryClosed(cmd.pin_type, inquiry.inquiry_id, InquiryCloseReason.VOIDED)
            return Decision((rejected, voided), ProxyCompletion(ProxyResult.VOIDED, 0))
        # the attempts the clerk has left: this inquiry's, and no more than the card's today
        left_today = max(0, ctx.policy.proxy_wrong_codes_per_day - today)
        return Decision((rejected,), ProxyCompletion(ProxyResult.WRONG_CODE, min(left, left_today)))
    event = PinReset(cmd.pin_type, ResetProcedure.PROXY, Applicant.PROXY.value, _doc_types(cmd.documents))
    return Decision((event,), ProxyCompletion(ProxyResult.COMPLETED, 0), {cmd.pin_type: cmd.new_pin})


def _codes_exhausted(state: CardState, cmd: CompleteProxyReset, ctx: Context) -> Refusal:
    """The card and PIN type took the day's bound of wrong codes: refused
    (the code is not checked) and recorded, until the next Tokyo day."""
    free_at = guards.proxy_codes_free_at(ctx.now)
    subject = f"{state.card_id}/{cmd.pin_type.value}"
    message = (
        f"{subject} took {ctx.policy.proxy_wrong_codes_per_day} wrong proxy codes today, the daily bound across inquiries; "
        f"the code can be tried again from {_tokyo(free_at)} (Asia/Tokyo)"
    )
    refused = ResetRefused(cmd.pin_type, ResetProcedure.PROXY, RefusalReason.PROXY_CODES_EXHAUSTED)
    return Decision((refused,), None, error=LimitReached(subject, message, free_at - ctx.now))


# -- convenience store ---------------------------------------------------------
def _refuse(
    state: CardState, cmd: ReserveStoreReset | StoreResetPin, procedure: ResetProcedure, reason: RefusalReason, message: str
) -> Refusal:
    """A store procedure refused with a reason: recorded, then FAILED_PRECONDITION."""
    refused = ResetRefused(cmd.pin_type, procedure, reason)
    subject = f"{state.card_id}/{cmd.pin_type.value}"
    return Decision((refused,), None, error=PreconditionFailed(PreconditionViolation(reason.violation_type, subject, message)))


def decide_reserve_store(state: CardState, cmd: ReserveStoreReset, ctx: Context) -> Decision[StoreReservation]:
    """The reset app proves the other certificate's PIN (a failed try of
    that PIN when wrong) and reserves a reset of `pin_type`."""
    require_pin(state, cmd.pin_type)
    proving = guards.reservation_proving_pin(state, cmd.pin_type, guards.any_chain_resets_user_certificate(ctx.policy))
    if proving is None:
        message = f"the {cmd.pin_type.value} PIN can be reset only at a ward office or Special Center"
        return _refuse(state, cmd, ResetProcedure.STORE_RESERVATION, RefusalReason.COUNTER_ONLY, message)
    proving_pin = normalize_pin(proving, cmd.proving_pin, "proving_pin")
    events, check = check_pin(state, proving, proving_pin, Purpose.STORE_RESERVATION, ctx)
    if check.result is not CheckResult.OK:
        return Decision(events, StoreReservation(check, None, None, proving))
    reservation_id = ctx.new_id()
    expires_at = guards.reservation_expiry(ctx.policy, ctx.now)
    reserved = StoreResetReserved(cmd.pin_type, reservation_id, proving.value, expires_at.isoformat())
    return Decision((*events, reserved), StoreReservation(check, reservation_id, expires_at, proving))


def _kiosk_message(reason: RefusalReason, cmd: StoreResetPin, ctx: Context) -> str:
    if reason is RefusalReason.STORE_CLOSED:
        return f"kiosk resets run {ctx.policy.store_opens:%H:%M}-{ctx.policy.store_closes:%H:%M} Asia/Tokyo"
    if reason is RefusalReason.COUNTER_ONLY:
        return f"this store cannot reset the {cmd.pin_type.value} PIN: a ward office or Special Center can"
    if reason is RefusalReason.NO_RESERVATION:
        return "no reservation for this PIN: reserve in the reset app first"
    return "the reservation has expired: reserve again in the reset app"


def decide_store_reset(state: CardState, cmd: StoreResetPin, ctx: Context) -> Decision[StoreReset]:
    """The kiosk, within the reservation's validity and store hours: the
    holder proves the reserved proving PIN again; then the new PIN is set
    and unlocked."""
    require_pin(state, cmd.pin_type)
    proving = guards.store_proving_pin(cmd.pin_type, ctx.policy.chain(cmd.chain_id).resets_user_certificate)
    is_open = guards.kiosk_open(ctx.policy, ctx.now)
    if reason := guards.kiosk_refusal(state, cmd.pin_type, proving, ctx.now, is_open=is_open):
        return _refuse(state, cmd, ResetProcedure.CONVENIENCE_STORE, reason, _kiosk_message(reason, cmd, ctx))
    assert proving is not None  # kiosk_refusal refuses a PIN no PIN proves
    if state.suspended:
        events, check = check_pin(state, proving, "", Purpose.STORE_RESET, ctx)  # recorded, never checked
        return Decision(events, StoreReset(check, False))
    proving_pin = normalize_pin(proving, cmd.proving_pin, "proving_pin")
    events, check = check_pin(state, proving, proving_pin, Purpose.STORE_RESET, ctx)
    if check.result is not CheckResult.OK:
        return Decision(events, StoreReset(check, False))
    reset = PinReset(cmd.pin_type, ResetProcedure.CONVENIENCE_STORE, Applicant.HOLDER.value, ())
    return Decision((*events, reset), StoreReset(check, True), {cmd.pin_type: cmd.new_pin})
