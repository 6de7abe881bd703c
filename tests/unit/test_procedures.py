"""The reset procedures of DESIGN.md §2 as given-events / when-command /
then-events: counter reset and unlock, the counter gate (hours, wards),
suspend and resume, the proxy's two visits, the convenience store, and the
way out a locked or suspended answer offers. Offices: the shipped Yokohama
schedule; the card's holder lives in Nishi ward."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import count

import pytest

from pinlife.config.offices import load_policy
from pinlife.domain.calendar import TOKYO
from pinlife.domain.commands import (
    CompleteProxyReset,
    RequestProxyReset,
    ReserveStoreReset,
    ResetPin,
    ResumeCard,
    StoreResetPin,
    SuspendCard,
    UnlockPin,
)
from pinlife.domain.documents import Applicant
from pinlife.domain.documents import DocumentType as T
from pinlife.domain.errors import PreconditionFailed
from pinlife.domain.events import (
    CardEnrolled,
    CardResumed,
    CardSuspended,
    CounterOutOfService,
    CounterProcedureRefused,
    PinLocked,
    PinReset,
    PinUnlocked,
    PinVerificationFailed,
    PinVerified,
    ProxyInquiryClosed,
    ProxyInquiryCodeRejected,
    ProxyInquiryIssued,
    Purpose,
    ResetRefused,
    StoreResetReserved,
    SuspendedCardAttempted,
)
from pinlife.domain.outcomes import (
    CheckResult,
    InquiryIssued,
    PinRestored,
    ProxyCompletion,
    ProxyResult,
    StoreReservation,
    StoreReset,
)
from pinlife.domain.policy import StoreChain, ThrottlePolicy
from pinlife.domain.recovery import Procedure, Route
from pinlife.domain.state import CardStatus, PinState
from tests.unit.helpers import (
    ALL_TYPES,
    CARD,
    CARD_INFO,
    CORRECT,
    RESIDENT,
    SIGNATURE,
    USER,
    WRONG,
    failures,
    given,
    never_checked,
    request_id,
    then,
    verify,
    when,
)

POLICY = load_policy(None, ThrottlePolicy(), date(2026, 6, 1))
NISHI, NAKA = "nishi-ward-office", "naka-ward-office"
HOLDER, REPRESENTATIVE = Applicant.HOLDER, Applicant.LEGAL_REPRESENTATIVE
THE_CARD = [(T.MY_NUMBER_CARD, "")]


def utc(y, mo, d, h=0, mi=0) -> datetime:
    """A Tokyo wall-clock time, as the service clock gives it (UTC)."""
    return datetime(y, mo, d, h, mi, tzinfo=TOKYO).astimezone(UTC)


OPEN = utc(2026, 6, 1, 10)  # a Monday morning: ward offices open
NIGHT = utc(2026, 6, 2, 3)  # 3 a.m.


def card(*events):
    return given(CardEnrolled(ALL_TYPES, "nishi"), *events)


def locked(pin_type):
    n = 5 if pin_type is SIGNATURE else 3
    return [*failures(pin_type, n), PinLocked(pin_type, n)]


def reset(pin_type=USER, new_pin="5678", documents=THE_CARD, applicant=HOLDER, office=NISHI, adult_ward=False):
    return ResetPin.create(request_id(), CARD, pin_type, new_pin, applicant, documents, adult_ward, office)


def unlock(pin_type=USER, office=NISHI):
    return UnlockPin.create(request_id(), CARD, pin_type, HOLDER, THE_CARD, False, office)


def at_counter(state, command, now=OPEN, pins=never_checked, policy=POLICY, **ctx):
    return when(state, command, pins, now=now, policy=policy, **ctx)


def violations(decision):
    assert isinstance(decision.error, PreconditionFailed)
    return [(v.type, v.subject) for v in decision.error.violations]


# --- counter reset and unlock ---------------------------------------------------------


def test_a_holders_counter_reset_sets_a_new_pin_and_unlocks():
    state = card(*locked(USER))
    decision = at_counter(state, reset(USER, "5678"))
    assert decision.events == (PinReset(USER, "counter", "holder", ("my_number_card",)),)
    assert decision.outcome == PinRestored(USER) and decision.error is None
    assert decision.new_pins == {USER: "5678"}
    after = then(state, decision).pin(USER)
    assert (after.locked, after.consecutive_failures, after.remaining_tries) == (False, 0, 3)


def test_a_representatives_reset_records_the_document_types_dated_in_tokyo():
    # 00:30 on 1 June in Tokyo is still 31 May in UTC: a register issued 1 June is not from the future.
    docs = [(T.MY_NUMBER_CARD, ""), (T.PUBLIC_PHOTO_ID, ""), (T.OTHER_ID, ""), (T.FAMILY_REGISTER, "2026-06-01")]
    decision = at_counter(card(), reset(SIGNATURE, "new123", docs, REPRESENTATIVE, None), now=utc(2026, 6, 1, 0, 30))
    assert decision.events == (
        PinReset(
            SIGNATURE, "counter", "legal_representative", ("my_number_card", "public_photo_id", "other_id", "family_register")
        ),
    )
    assert decision.new_pins == {SIGNATURE: "NEW123"}


def test_an_incomplete_checklist_is_refused_naming_every_gap_and_recorded():
    state = card(*locked(USER))
    decision = at_counter(state, reset(USER, documents=[(T.FAMILY_REGISTER, "2025-01-01")], applicant=REPRESENTATIVE))
    subjects = ("documents/my_number_card", "documents/ids", "documents/public_photo_id", "documents/authority")
    assert [s for _, s in violations(decision)] == list(subjects)
    assert violations(decision)[-1] == ("DOCUMENT_STALE", "documents/authority")
    assert decision.events == (CounterProcedureRefused("reset", subjects, USER),)  # names the PIN type it was for
    assert decision.new_pins == {} and decision.outcome is None
    assert then(state, decision).pin(USER).locked


def test_unlock_keeps_the_pin_and_starts_the_count_afresh():
    state = card(*locked(SIGNATURE))
    decision = at_counter(state, unlock(SIGNATURE))
    assert decision.events == (PinUnlocked(SIGNATURE, "holder", ("my_number_card",)),)
    assert decision.outcome == PinRestored(SIGNATURE) and decision.new_pins == {}
    assert then(state, decision).pin(SIGNATURE) == PinState(SIGNATURE, last_version=state.version + 1)


# --- the counter gate --------------------------------------------------------------------

COUNTER_COMMANDS = {
    "ResetPin": lambda office: reset(office=office),
    "UnlockPin": lambda office: unlock(office=office),
    "SuspendCard": lambda office: SuspendCard.create(request_id(), CARD, "lost", office),
    "ResumeCard": lambda office: ResumeCard.create(request_id(), CARD, HOLDER, THE_CARD, False, office),
    "RequestProxyReset": lambda office: RequestProxyReset.create(request_id(), CARD, USER, THE_CARD, office),
    "CompleteProxyReset": lambda office: CompleteProxyReset.create(
        request_id(), CARD, USER, "inq-00000001", "12345678", "5678", THE_CARD, office
    ),
}


@pytest.mark.parametrize("rpc", COUNTER_COMMANDS)
def test_a_closed_counter_is_refused_naming_its_next_opening(rpc):
    decision = at_counter(card(), COUNTER_COMMANDS[rpc](NISHI), now=NIGHT)
    assert decision.events == () and decision.new_pins == {}
    assert decision.terminal_events == (CounterOutOfService(rpc, CARD, "out_of_hours"),)
    assert violations(decision) == [("OUT_OF_HOURS", f"offices/{NISHI}")]
    assert "2026-06-02 08:45" in decision.error.violations[0].description


def test_a_counter_does_not_act_for_a_ward_it_does_not_serve():
    decision = at_counter(card(), reset(office=NAKA))
    assert decision.terminal_events == (CounterOutOfService("ResetPin", CARD, "out_of_jurisdiction"),)
    assert violations(decision) == [("OUT_OF_JURISDICTION", f"offices/{NAKA}")]
    message = decision.error.violations[0].description
    assert "Nishi Ward Office" in message and "Special Center (Yokohama Station)" in message
    # a card without a recorded ward may be served anywhere
    assert at_counter(given(CardEnrolled(ALL_TYPES)), reset(office=NAKA)).error is None


def test_an_unknown_office_is_refused_and_a_terminal_without_an_office_is_not_gated():
    decision = at_counter(card(), reset(office="atlantis"))
    assert decision.terminal_events == (CounterOutOfService("ResetPin", CARD, "unknown_office"),)
    assert violations(decision) == [("UNKNOWN_OFFICE", "offices/atlantis")]
    assert at_counter(card(), reset(office=None), now=NIGHT).new_pins == {USER: "5678"}  # the call centre, dev mode


def test_a_closed_counter_learns_nothing_about_an_unknown_card():
    decision = at_counter(given(), reset(), now=NIGHT)  # not NotFound: no card-existence oracle at 3 a.m.
    assert decision.terminal_events == (CounterOutOfService("ResetPin", CARD, "out_of_hours"),)


# --- suspend and resume ---------------------------------------------------------------


def test_a_suspended_card_answers_suspended_unchecked_until_resumed():
    state = card()
    suspend = at_counter(state, SuspendCard.create(request_id(), CARD, "lost", None), now=NIGHT)  # the call centre
    assert suspend.events == (CardSuspended("lost"),)
    assert suspend.outcome.status is CardStatus.SUSPENDED
    state = then(state, suspend)
    attempt = when(state, verify(USER, CORRECT[USER]), never_checked, now=OPEN, policy=POLICY)
    assert attempt.events == (SuspendedCardAttempted(USER, Purpose.VERIFY),)
    assert attempt.outcome.result is CheckResult.CARD_SUSPENDED
    assert attempt.outcome.recovery.procedures == (Procedure.COUNTER_RESUME,)
    assert [o.office_id for o in attempt.outcome.recovery.openings] == [NISHI, "special-center-yokohama"]
    again = at_counter(state, SuspendCard.create(request_id(), CARD, "stolen", NISHI))
    assert again.events == () and again.outcome.status is CardStatus.SUSPENDED  # recorded once
    resume = at_counter(state, COUNTER_COMMANDS["ResumeCard"](NISHI))
    assert resume.events == (CardResumed("holder", ("my_number_card",)),)
    state = then(state, resume)
    assert when(state, verify(USER, CORRECT[USER])).events == (PinVerified(USER),)


# --- a proxy's two visits ---------------------------------------------------------------

CODE = "12345678"


def proxy_ctx(inquiry_id="inq-00000001", right_code=CODE):
    ids = (f"inq-{n:08d}" for n in count(1))
    return dict(
        new_id=lambda: next(ids),
        new_code=lambda: CODE,
        code_matches=lambda kind, name, value: (kind, name, value) == ("inquiry_code", inquiry_id, right_code),
    )


def request_proxy():  # the proxy's first visit
    return RequestProxyReset.create(request_id(), CARD, USER, [(T.MY_NUMBER_CARD, ""), (T.OTHER_ID, "")], NISHI)


def complete_proxy(code=CODE, inquiry_id="inq-00000001"):
    docs = [(T.MY_NUMBER_CARD, ""), (T.INQUIRY_FORM, ""), (T.POWER_OF_ATTORNEY, ""), (T.PUBLIC_PHOTO_ID, "")]
    return CompleteProxyReset.create(request_id(), CARD, USER, inquiry_id, code, "5678", docs, NISHI)


def inquired(state, now=OPEN):
    return then(state, at_counter(state, request_proxy(), now=now, **proxy_ctx()))


def test_a_proxys_first_visit_issues_an_inquiry_with_a_code_and_an_expiry():
    decision = at_counter(card(), request_proxy(), **proxy_ctx())
    expires = OPEN + POLICY.inquiry_validity
    assert decision.events == (ProxyInquiryIssued(USER, "inq-00000001", expires.isoformat(), ("my_number_card", "other_id")),)
    assert decision.outcome == InquiryIssued("inq-00000001", expires, CODE)
    assert decision.new_secrets == {("inquiry_code", "inq-00000001"): CODE} and decision.new_pins == {}
    # a second request within the hour is refused, recorded: one form in the post at a time
    state = then(card(), decision)
    soon = at_counter(state, request_proxy(), new_id=lambda: "inq-00000002", new_code=lambda: "87654321")
    assert soon.events == (ResetRefused(USER, "proxy_inquiry", "inquiry_open"),) and soon.new_secrets == {}
    assert violations(soon) == [("INQUIRY_OPEN", "card-0001/user_certificate")]
    assert "can be issued from" in str(soon.error)
    # a second request an hour later supersedes the first
    again = at_counter(
        state, request_proxy(), now=OPEN + timedelta(hours=1), new_id=lambda: "inq-00000002", new_code=lambda: "87654321"
    )
    assert again.events[0] == ProxyInquiryClosed(USER, "inq-00000001", "superseded")
    assert (again.events[1].inquiry_id, again.outcome.code) == ("inq-00000002", "87654321")
    assert then(state, again).inquiries[USER].inquiry_id == "inq-00000002"


def test_the_right_code_resets_once():
    state = inquired(card(*locked(USER)))
    other = at_counter(state, complete_proxy(inquiry_id="inq-99999999"), **proxy_ctx())
    assert other.outcome.result is ProxyResult.NO_OPEN_INQUIRY and other.new_pins == {}
    decision = at_counter(state, complete_proxy(), **proxy_ctx())
    assert decision.events == (
        PinReset(USER, "proxy", "proxy", ("my_number_card", "inquiry_form", "power_of_attorney", "public_photo_id")),
    )
    assert decision.outcome.result is ProxyResult.COMPLETED and decision.new_pins == {USER: "5678"}
    state = then(state, decision)
    assert not state.pin(USER).locked and USER not in state.inquiries
    used = at_counter(state, complete_proxy(), **proxy_ctx())
    assert used.events == (ResetRefused(USER, "proxy", "no_open_inquiry"),)
    assert used.outcome == ProxyCompletion(ProxyResult.NO_OPEN_INQUIRY, 0) and used.new_pins == {}


def test_wrong_codes_count_down_and_void_the_inquiry():
    state = inquired(card())
    for wrong, remaining in ((1, 2), (2, 1)):
        decision = at_counter(state, complete_proxy("00000000"), **proxy_ctx())
        assert decision.events == (ProxyInquiryCodeRejected(USER, "inq-00000001", wrong, remaining, wrong),)
        assert decision.outcome == ProxyCompletion(ProxyResult.WRONG_CODE, remaining) and decision.new_pins == {}
        state = then(state, decision, OPEN)
    decision = at_counter(state, complete_proxy("00000000"), **proxy_ctx())
    assert decision.events == (
        ProxyInquiryCodeRejected(USER, "inq-00000001", 3, 0, 3),
        ProxyInquiryClosed(USER, "inq-00000001", "voided"),
    )
    assert decision.outcome.result is ProxyResult.VOIDED
    state = then(state, decision)
    assert at_counter(state, complete_proxy(), **proxy_ctx()).outcome.result is ProxyResult.NO_OPEN_INQUIRY


def test_an_expired_inquiry_is_closed():
    state = inquired(card())
    expiry = OPEN + POLICY.inquiry_validity  # a Wednesday morning: the office is open
    decision = at_counter(state, complete_proxy(), now=expiry, **proxy_ctx())
    assert decision.events == (ProxyInquiryClosed(USER, "inq-00000001", "expired"),)
    assert decision.outcome == ProxyCompletion(ProxyResult.EXPIRED, 0) and decision.new_pins == {}
    assert at_counter(state, complete_proxy(), now=expiry - timedelta(minutes=1), **proxy_ctx()).new_pins == {USER: "5678"}


# --- the convenience store ------------------------------------------------------------------

RESERVED_AT = utc(2026, 6, 1, 12)
EXPIRES = RESERVED_AT + timedelta(hours=24)
RESERVATION = StoreResetReserved(SIGNATURE, "res-00000001", "user_certificate", EXPIRES.isoformat())
CHAINS = replace(POLICY, store_chains={"chain-a": StoreChain(resets_user_certificate=True)})


def reserve(pin_type=SIGNATURE, proving=CORRECT[USER]):
    return ReserveStoreReset.create(request_id(), CARD, pin_type, proving)


def kiosk(pin_type=SIGNATURE, proving=CORRECT[USER], chain=None):
    return StoreResetPin.create(request_id(), CARD, pin_type, proving, CORRECT[pin_type], chain)


def store(state, command, pins=CORRECT, now=RESERVED_AT, policy=POLICY):
    return when(state, command, pins, now=now, policy=policy, new_id=lambda: "res-00000001")


def test_reserving_a_signature_reset_proves_the_user_certificate_pin():
    state = card(*locked(SIGNATURE))
    decision = store(state, reserve())
    assert decision.events == (PinVerified(USER), RESERVATION)
    assert decision.outcome == StoreReservation(decision.outcome.check, "res-00000001", EXPIRES, USER)
    assert then(state, decision).reservations[SIGNATURE].expires_at == EXPIRES


def test_wrong_proving_pins_count_against_the_user_certificate_pin_and_the_third_locks_it():
    state = card(*locked(SIGNATURE))
    for n in (1, 2):
        decision = store(state, reserve(proving=WRONG[USER]))
        assert decision.events == (PinVerificationFailed(USER, Purpose.STORE_RESERVATION, n, 3 - n),)
        assert decision.outcome.check.result is CheckResult.WRONG_PIN and decision.outcome.reservation_id is None
        state = then(state, decision)
    decision = store(state, reserve(proving=WRONG[USER]))
    assert decision.events == (PinVerificationFailed(USER, Purpose.STORE_RESERVATION, 3, 0), PinLocked(USER, 3))
    assert decision.outcome.check.result is CheckResult.LOCKED and decision.outcome.reservation_id is None
    assert decision.outcome.check.recovery.route is Route.COUNTER  # both certificates locked
    assert then(state, decision).reservations == {}


@pytest.mark.parametrize("pin_type", [RESIDENT, CARD_INFO, USER])
def test_the_other_pins_are_reset_only_at_a_counter_without_a_chain_that_allows_it(pin_type):
    decision = store(card(), reserve(pin_type, "1234"), never_checked)
    assert decision.events == (ResetRefused(pin_type, "store_reservation", "counter_only"),)
    assert violations(decision) == [("COUNTER_ONLY", f"{CARD}/{pin_type.value}")]
    assert store(card(), kiosk(pin_type, "1234"), never_checked).events == (
        ResetRefused(pin_type, "convenience_store", "counter_only"),
    )


def test_a_chain_that_allows_it_resets_the_user_certificate_pin_by_the_signature_pin():
    state = card(*locked(USER))
    reserved = store(state, reserve(USER, CORRECT[SIGNATURE]), policy=CHAINS)
    assert reserved.events[0] == PinVerified(SIGNATURE)
    assert (reserved.events[1].pin_type, reserved.events[1].proving_pin_type) == (USER, "signature")
    state = then(state, reserved)
    elsewhere = store(state, kiosk(USER, CORRECT[SIGNATURE], "chain-b"), never_checked, policy=CHAINS)
    assert elsewhere.events == (ResetRefused(USER, "convenience_store", "counter_only"),)
    done = store(state, kiosk(USER, CORRECT[SIGNATURE], "chain-a"), policy=CHAINS)
    assert done.events[-1] == PinReset(USER, "convenience_store", "holder", ())
    assert done.new_pins == {USER: CORRECT[USER]} and not then(state, done).pin(USER).locked


def test_the_kiosk_resets_and_unlocks_the_signature_pin_within_the_reservation():
    state = card(*locked(SIGNATURE), RESERVATION)
    decision = store(state, kiosk(), now=utc(2026, 6, 1, 20))
    assert decision.events == (PinVerified(USER), PinReset(SIGNATURE, "convenience_store", "holder", ()))
    assert decision.outcome == StoreReset(decision.outcome.check, True)
    assert decision.new_pins == {SIGNATURE: CORRECT[SIGNATURE]}
    after = then(state, decision)
    assert not after.pin(SIGNATURE).locked and after.reservations == {}


@pytest.mark.parametrize("tokyo_time, is_open", [((6, 29), False), ((6, 30), True), ((22, 59), True), ((23, 0), False)])
def test_kiosks_run_from_6_30_to_23_00_tokyo(tokyo_time, is_open):
    now = utc(2026, 6, 2 if tokyo_time[0] < 12 else 1, *tokyo_time)  # within the reservation
    decision = store(card(*locked(SIGNATURE), RESERVATION), kiosk(), CORRECT if is_open else never_checked, now)
    if is_open:
        assert decision.outcome.reset and decision.new_pins
    else:
        assert decision.events == (ResetRefused(SIGNATURE, "convenience_store", "store_closed"),)
        assert violations(decision) == [("STORE_CLOSED", f"{CARD}/signature")] and decision.new_pins == {}


@pytest.mark.parametrize("reservation, reason", [((), "no_reservation"), ((RESERVATION,), "reservation_expired")])
def test_the_kiosk_needs_a_live_reservation(reservation, reason):
    decision = store(card(*locked(SIGNATURE), *reservation), kiosk(), never_checked, now=EXPIRES)
    assert decision.events == (ResetRefused(SIGNATURE, "convenience_store", reason),)
    assert violations(decision) == [(reason.upper(), f"{CARD}/signature")] and decision.new_pins == {}


def test_a_wrong_proving_pin_at_the_kiosk_counts_against_the_user_certificate_pin():
    decision = store(card(*locked(SIGNATURE), RESERVATION), kiosk(proving=WRONG[USER]), now=utc(2026, 6, 1, 20))
    assert decision.events == (PinVerificationFailed(USER, Purpose.STORE_RESET, 1, 2),)
    assert decision.outcome.reset is False and decision.new_pins == {}


# --- the way out ---------------------------------------------------------------------------


def recovery(state, pin_type, now=utc(2026, 6, 3, 18)):  # a Wednesday evening
    return when(state, verify(pin_type, CORRECT[pin_type]), never_checked, now=now, policy=POLICY).outcome.recovery


def test_a_locked_signature_pin_offers_the_store_while_the_user_certificate_pin_works():
    works = recovery(card(*locked(SIGNATURE)), SIGNATURE)
    assert works.route is Route.CONVENIENCE_STORE_OR_COUNTER
    assert works.procedures == (Procedure.CONVENIENCE_STORE_RESET, Procedure.COUNTER_RESET)
    both = recovery(card(*locked(SIGNATURE), *locked(USER)), SIGNATURE)
    assert (both.route, both.procedures) == (Route.COUNTER, (Procedure.COUNTER_RESET,))
    assert recovery(card(*locked(RESIDENT)), RESIDENT).procedures == (Procedure.COUNTER_RESET,)


def test_the_openings_are_those_of_the_offices_serving_the_cards_ward():
    nishi = recovery(card(*locked(USER)), USER)
    assert [(o.office_id, o.at) for o in nishi.openings] == [
        (NISHI, datetime(2026, 6, 4, 8, 45, tzinfo=TOKYO)),
        ("special-center-yokohama", datetime(2026, 6, 5, 11, 30, tzinfo=TOKYO)),
    ]
    assert "Nishi Ward Office, 2026-06-04 08:45" in nishi.description
    tsurumi = recovery(given(CardEnrolled(ALL_TYPES, "tsurumi"), *locked(USER)), USER)
    assert {o.office_id for o in tsurumi.openings} == {"tsurumi-ward-office", "special-center-shin-yokohama"}
