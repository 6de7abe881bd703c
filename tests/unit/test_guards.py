"""The guards (service/domain/guards.py): each rule the deciders decide by
and the lawful check judges by, stated once. Given / when / then for each,
and, at the end, a rule changed in its guard followed by both sides."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from unittest.mock import patch

import pytest
from hypothesis import given as hgiven
from hypothesis import strategies as st

from pinlife.config.offices import load_policy
from pinlife.domain import guards
from pinlife.domain.calendar import TOKYO
from pinlife.domain.commands import StoreResetPin
from pinlife.domain.documents import CHECKLISTS, Applicant, Document, DocumentType, check_checklist
from pinlife.domain.events import (
    CardEnrolled,
    CardSuspended,
    CounterProcedure,
    PinLocked,
    PinReset,
    PinVerified,
    Recorded,
    RefusalReason,
    ResetProcedure,
    ResetRefused,
    StoreResetReserved,
)
from pinlife.domain.lawful import first_unlawful
from pinlife.domain.policy import Policy, StoreChain, ThrottlePolicy
from pinlife.domain.state import PinState
from tests.unit.helpers import ALL_TYPES, CARD_INFO, CORRECT, RESIDENT, SIGNATURE, USER, failures, given, request_id, when

POLICY = Policy()
YOKOHAMA = load_policy(None, ThrottlePolicy(), date(2026, 6, 1))


def tokyo(hour: int, minute: int = 0, day: int = 1) -> datetime:
    """A Tokyo wall-clock time on a day of June 2026, as the service clock gives it (UTC)."""
    return datetime(2026, 6, day, hour, minute, tzinfo=TOKYO).astimezone(UTC)


# -- a card's PINs and their checks ----------------------------------------------------------


def test_a_pin_is_set_only_if_the_card_enrolled_it():
    state = given(CardEnrolled((USER, SIGNATURE)))
    assert guards.pin_set(state, USER) and not guards.pin_set(state, RESIDENT)


def test_a_suspended_card_is_answered_so_before_a_locked_pin():
    locked = given(CardEnrolled(ALL_TYPES), *failures(USER, 3), PinLocked(USER, 3))
    assert guards.why_unchecked(given(CardEnrolled(ALL_TYPES)), USER) is None
    assert guards.why_unchecked(locked, USER) is guards.Unchecked.PIN_LOCKED
    assert guards.why_unchecked(locked, SIGNATURE) is None  # each PIN type on its own
    suspended = given(CardEnrolled(ALL_TYPES), *failures(USER, 3), PinLocked(USER, 3), CardSuspended("lost"))
    assert guards.why_unchecked(suspended, USER) is guards.Unchecked.CARD_SUSPENDED
    assert guards.why_unchecked(suspended, SIGNATURE) is guards.Unchecked.CARD_SUSPENDED


@pytest.mark.parametrize("pin_type, limit", [(USER, 3), (SIGNATURE, 5)])
def test_a_wrong_entry_adds_one_failure_and_the_limit_locks(pin_type, limit):
    assert guards.wrong_entry(PinState(pin_type)) == (1, limit - 1)
    assert guards.wrong_entry(PinState(pin_type, limit - 1)) == (limit, 0)
    assert not guards.locks(pin_type, limit - 1) and guards.locks(pin_type, limit)


# -- what expires ----------------------------------------------------------------------------

EXPIRY = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)


def test_a_thing_is_good_before_its_expiry_not_at_it():
    assert not guards.expired(EXPIRY, EXPIRY - timedelta(microseconds=1))
    assert guards.expired(EXPIRY, EXPIRY)


def test_the_validities_are_configuration():
    at = EXPIRY
    assert guards.inquiry_expiry(POLICY, at) == at + timedelta(days=30)
    assert guards.reservation_expiry(POLICY, at) == at + timedelta(hours=24)
    short = Policy(inquiry_validity=timedelta(days=7), reservation_validity=timedelta(hours=1))
    assert (guards.inquiry_expiry(short, at), guards.reservation_expiry(short, at)) == (
        at + timedelta(days=7),
        at + timedelta(hours=1),
    )


def test_an_inquiry_is_voided_by_the_wrong_code_that_leaves_no_attempt():
    policy = Policy(inquiry_max_wrong_codes=3)
    assert [guards.inquiry_attempts_left(policy, n) for n in (1, 2, 3, 4)] == [2, 1, 0, 0]
    assert [guards.inquiry_voided(left) for left in (2, 1, 0)] == [False, False, True]


# -- counters --------------------------------------------------------------------------------

MONDAY_10, NIGHT = tokyo(10), tokyo(3, day=2)


def test_a_counter_acts_in_its_offices_hours_for_the_wards_it_serves():
    assert guards.counter_refusal(YOKOHAMA, "nishi-ward-office", "nishi", MONDAY_10) is None
    assert guards.counter_refusal(YOKOHAMA, "nishi-ward-office", None, MONDAY_10) is None  # no ward recorded
    assert guards.counter_refusal(YOKOHAMA, "nishi-ward-office", "nishi", NIGHT) is RefusalReason.OUT_OF_HOURS
    assert guards.counter_refusal(YOKOHAMA, "naka-ward-office", "nishi", MONDAY_10) is RefusalReason.OUT_OF_JURISDICTION
    assert guards.counter_refusal(YOKOHAMA, "atlantis", "nishi", MONDAY_10) is RefusalReason.UNKNOWN_OFFICE
    assert guards.counter_refusal(YOKOHAMA, None, "nishi", NIGHT) is None  # not a counter: the call centre


def test_a_closed_counter_is_refused_before_its_wards_are_looked_at():
    assert guards.counter_refusal(YOKOHAMA, "naka-ward-office", "nishi", NIGHT) is RefusalReason.OUT_OF_HOURS


def test_documents_are_dated_by_the_tokyo_day():
    assert guards.day_of(datetime(2026, 5, 31, 15, 30, tzinfo=UTC)) == date(2026, 6, 1)


def test_a_checklist_is_the_procedures():
    card = (Document(DocumentType.MY_NUMBER_CARD),)
    assert guards.checklist_gaps(CounterProcedure.RESET, Applicant.HOLDER, card, MONDAY_10, adult_ward=False) == []
    gaps = guards.checklist_gaps(CounterProcedure.PROXY_COMPLETION, Applicant.PROXY, card, MONDAY_10, adult_ward=False)
    assert [v.subject for v in gaps] == ["documents/inquiry_form", "documents/power_of_attorney", "documents/public_photo_id"]


def test_what_a_refusal_can_name_is_derived_from_the_checklists():
    counter = {"documents/my_number_card", "documents/ids", "documents/public_photo_id", "documents/authority"}
    assert {p: set(guards.refusable_subjects(p)) for p in CounterProcedure} == {
        CounterProcedure.RESET: counter,
        CounterProcedure.UNLOCK: counter,
        CounterProcedure.RESUME: counter,
        CounterProcedure.PROXY_INQUIRY: {"documents/my_number_card", "documents/ids"},
        CounterProcedure.PROXY_COMPLETION: {
            "documents/my_number_card",
            "documents/inquiry_form",
            "documents/power_of_attorney",
            "documents/public_photo_id",
        },
    }


documents = st.lists(
    st.builds(
        Document,
        st.sampled_from(DocumentType),
        st.one_of(st.none(), st.dates(date(2025, 1, 1), date(2026, 12, 31))),
    ),
    max_size=6,
).map(tuple)


@hgiven(procedure=st.sampled_from(CounterProcedure), docs=documents, adult_ward=st.booleans(), data=st.data())
def test_no_checklist_names_a_subject_the_empty_checklist_does_not(procedure, docs, adult_ward, data):
    """What makes refusable_subjects sound: a checklist with more documents misses no more."""
    applicant = data.draw(st.sampled_from(CHECKLISTS[procedure].applicants))
    named = check_checklist(applicant, docs, date(2026, 6, 1), adult_ward=adult_ward, step=CHECKLISTS[procedure].step)
    assert {v.subject for v in named} <= guards.refusable_subjects(procedure)


# -- the convenience store -------------------------------------------------------------------


@pytest.mark.parametrize("hour, minute, is_open", [(6, 29, False), (6, 30, True), (22, 59, True), (23, 0, False)])
def test_kiosks_run_from_6_30_to_23_00_tokyo(hour, minute, is_open):
    assert guards.kiosk_open(POLICY, tokyo(hour, minute)) is is_open


def test_the_kiosk_hours_are_configuration():
    late = Policy(store_opens=time(0, 0), store_closes=time(23, 59))
    assert guards.kiosk_open(late, tokyo(23, 30)) and not guards.kiosk_open(POLICY, tokyo(23, 30))


def test_which_pin_proves_a_store_reset():
    assert guards.store_proving_pin(SIGNATURE, False) is USER
    assert guards.store_proving_pin(USER, False) is None
    assert guards.store_proving_pin(USER, True) is SIGNATURE
    assert guards.store_proving_pin(RESIDENT, True) is None and guards.store_proving_pin(CARD_INFO, True) is None


def test_any_chain_that_allows_it_lets_the_reset_app_reserve_a_user_certificate_reset():
    chains = Policy(store_chains={"a": StoreChain(), "b": StoreChain(resets_user_certificate=True)})
    assert guards.any_chain_resets_user_certificate(chains) and not guards.any_chain_resets_user_certificate(POLICY)
    card = given(CardEnrolled(ALL_TYPES))
    assert guards.reservation_proving_pin(card, USER, True) is SIGNATURE
    assert guards.reservation_proving_pin(card, USER, False) is None
    assert guards.reservation_proving_pin(given(CardEnrolled((SIGNATURE,))), SIGNATURE, True) is None  # no proving PIN


RESERVED_AT = tokyo(12)
RESERVATION = StoreResetReserved(SIGNATURE, "res-1", USER.value, (RESERVED_AT + timedelta(hours=24)).isoformat())


@pytest.mark.parametrize(
    "events, pin_type, proving, at, is_open, answer",
    [
        ((RESERVATION,), SIGNATURE, USER, RESERVED_AT, True, None),
        ((RESERVATION,), SIGNATURE, USER, RESERVED_AT, False, RefusalReason.STORE_CLOSED),
        ((), RESIDENT, None, RESERVED_AT, False, RefusalReason.STORE_CLOSED),  # hours first
        ((), RESIDENT, None, RESERVED_AT, True, RefusalReason.COUNTER_ONLY),
        ((CardSuspended("lost"),), SIGNATURE, USER, RESERVED_AT, True, None),  # checked: recorded as suspended
        ((), SIGNATURE, USER, RESERVED_AT, True, RefusalReason.NO_RESERVATION),
        ((RESERVATION,), SIGNATURE, SIGNATURE, RESERVED_AT, True, RefusalReason.NO_RESERVATION),  # proved otherwise
        ((RESERVATION,), SIGNATURE, USER, RESERVED_AT + timedelta(hours=24), True, RefusalReason.RESERVATION_EXPIRED),
    ],
)
def test_the_kiosks_refusals_in_its_order(events, pin_type, proving, at, is_open, answer):
    state = given(CardEnrolled(ALL_TYPES), *events)
    assert guards.kiosk_refusal(state, pin_type, proving, at, is_open=is_open) is answer
    assert answer is None or answer in guards.KIOSK_REFUSALS


# -- a rule changed in its guard: both sides follow ------------------------------------------


def kiosk_at_the_expiry_instant() -> tuple[list[Recorded], tuple]:
    """A signature reset reserved at noon, taken to the kiosk exactly 24 hours later."""
    enrolled, reserved = CardEnrolled(ALL_TYPES), (PinVerified(USER), RESERVATION)
    stream = [Recorded(enrolled, 1, RESERVED_AT - timedelta(hours=1))]
    stream += [Recorded(e, v, RESERVED_AT) for v, e in enumerate(reserved, start=2)]
    state = given(enrolled, *reserved)
    kiosk = StoreResetPin.create(request_id(), state.card_id, SIGNATURE, CORRECT[USER], CORRECT[SIGNATURE], None)
    return stream, when(state, kiosk, now=RESERVED_AT + timedelta(hours=24), policy=POLICY).events


def test_a_rule_changed_in_its_guard_changes_what_is_decided_and_what_is_lawful():
    # given the rule as it is: a reservation is not good at its expiry instant
    stream, events = kiosk_at_the_expiry_instant()
    assert events == (ResetRefused(SIGNATURE, ResetProcedure.CONVENIENCE_STORE, RefusalReason.RESERVATION_EXPIRED),)
    at = RESERVED_AT + timedelta(hours=24)
    reset = [Recorded(PinVerified(USER), 4, at), Recorded(PinReset(SIGNATURE, "convenience_store", "holder", ()), 5, at)]
    assert first_unlawful(stream + reset, policy=POLICY).version == 5  # a reset then is unlawful
    # when the guard is changed to "good up to and including its expiry"
    with patch.object(guards, "expired", lambda expires_at, at: at > expires_at):
        stream, events = kiosk_at_the_expiry_instant()
        # then the kiosk resets, and the lawful check accepts what it decided
        assert events == tuple(r.event for r in reset)
        decided = stream + [Recorded(e, v, at) for v, e in enumerate(events, start=4)]
        assert first_unlawful(decided, policy=POLICY) is None
    assert first_unlawful(decided, policy=POLICY).version == 5  # judged by the rule as it is again


def test_a_ward_is_served_when_an_office_of_the_offices_file_lists_it():
    assert guards.ward_served(YOKOHAMA, "naka") and guards.ward_served(YOKOHAMA, "tsurumi")
    assert guards.ward_served(YOKOHAMA, None)  # no ward recorded: every office serves the card
    assert not guards.ward_served(YOKOHAMA, "atlantis")
