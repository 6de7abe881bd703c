"""A lawful history (service/domain/lawful.py): every stream the rules produce
is accepted, and every forged one is named at its first unlawful event.

The first half runs random command sequences through `decide` and `evolve`,
as the service does, and asserts that no event of the result is flagged:
the check has no false alarms. The second half forges streams, given-events
style, and asserts the version and the reason named."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import count
from typing import ClassVar
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import given as hgiven
from hypothesis import strategies as st

from pinlife.config.offices import load_policy
from pinlife.domain import guards
from pinlife.domain import state as state_module
from pinlife.domain.calendar import TOKYO
from pinlife.domain.commands import (
    ChangePin,
    CompleteProxyReset,
    EnrollCard,
    RequestProxyReset,
    ReserveStoreReset,
    ResetPin,
    ResumeCard,
    StoreResetPin,
    SuspendCard,
    UnlockPin,
    VerifyPin,
)
from pinlife.domain.decide import decide
from pinlife.domain.decision import Context
from pinlife.domain.documents import Applicant
from pinlife.domain.documents import DocumentType as D
from pinlife.domain.errors import DomainError
from pinlife.domain.events import (
    EVENT_TYPES,
    AccessDenied,
    CardEnrolled,
    CardResumed,
    CardSuspended,
    CounterProcedureRefused,
    Event,
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
    ResetRefused,
    StoreResetReserved,
    SuspendedCardAttempted,
)
from pinlife.domain.lawful import RULES, TERMINAL_EVENTS, Unlawful, first_unlawful
from pinlife.domain.pins import PinType, retry_limit
from pinlife.domain.policy import Policy, StoreChain, ThrottlePolicy
from pinlife.domain.state import CardState, evolve
from pinlife.domain.upcasting import event_from_stored
from tests.unit.helpers import ALL_TYPES, CARD, CARD_INFO, RESIDENT, SIGNATURE, USER, failed

# ============================================================================
# Lawful histories: produced by decide + evolve
# ============================================================================

START = datetime(2026, 6, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
_M, _H = timedelta(minutes=1), timedelta(hours=1)
# How far the clock moves before a command: often not at all (one batch, one instant) or a little; now and then
# past a reservation's 24 hours or an inquiry's 30 days.
STEPS = (0 * _M, _M, 0 * _M, 2 * _H, _M, 0 * _M, 9 * _H, _M, 2 * _H, 25 * _H, 0 * _M, _M, 2 * _H, 31 * 24 * _H)
NEW_PINS = {RESIDENT: ("1234", "5678"), CARD_INFO: ("1234", "0000"), USER: ("1234", "4321"), SIGNATURE: ("ABC123", "NEW456")}
KINDS = (
    "verify",
    "verify",
    "verify",
    "change",
    "reset",
    "unlock",
    "suspend",
    "resume",
    "request_proxy",
    "complete_proxy",
    "complete_proxy",
    "reserve",
    "kiosk",
    "kiosk",
    "enroll",
)

YOKOHAMA = load_policy(None, ThrottlePolicy(), date(2026, 6, 1))  # the shipped offices: enrolments' wards are checked


def shipped(**settings) -> Policy:
    """The shipped offices and calendar, with these settings."""
    return dataclasses.replace(YOKOHAMA, **settings)


@dataclass(frozen=True)
class Action:
    """An abstract command, made concrete against the run's model of the card."""

    kind: str
    pin_type: PinType
    right: bool  # the PIN (or code, or inquiry) given is the right one
    variant: int  # which applicant / documents / new PIN / chain / reason
    step: int  # how far the clock moves before it (an index into STEPS)


def _wrong(pin_type: PinType, right: str | None) -> str:
    candidates = ("WRONG9", "ZZZ999") if pin_type is SIGNATURE else ("9999", "8888")
    return candidates[0] if candidates[0] != right else candidates[1]


@dataclass
class Run:
    """One card driven through commands as the service does: decide, append, store secrets."""

    policy: Policy
    now: datetime = START
    state: CardState = field(default_factory=lambda: CardState(CARD))
    stream: list[Recorded] = field(default_factory=list)
    pins: dict[PinType, str] = field(default_factory=dict)  # the verifiers, in the clear
    codes: dict[str, str] = field(default_factory=dict)  # inquiry id -> code
    ids: count = field(default_factory=lambda: count(1))
    requests: count = field(default_factory=lambda: count(1))
    refusals: int = 0  # decisions that raised (no events)

    def context(self) -> Context:
        return Context(
            self.now,
            self.policy,
            matches=lambda t, p: self.pins.get(t) == p,
            code_matches=lambda kind, name, value: self.codes.get(name) == value,
            new_id=lambda: f"id-{next(self.ids):08d}",
            new_code=lambda: f"{next(self.ids):08d}",
        )

    def request_id(self) -> str:
        return f"req-{next(self.requests):08d}"

    def do(self, cmd) -> None:
        try:
            decision = decide(self.state, cmd, self.context())
        except DomainError:
            self.refusals += 1
            return
        for e in decision.events:  # one command: one append, one instant
            r = Recorded(e, self.state.version + 1, self.now)
            self.state = evolve(self.state, r)
            self.stream.append(r)
        if decision.error is None:
            self.pins.update(decision.new_pins)
            self.codes.update({name: code for (_, name), code in decision.new_secrets.items()})

    def enroll(self, pin_types: tuple[PinType, ...], ward: str | None) -> None:
        pins = {t: NEW_PINS[t][0] for t in pin_types}
        self.do(EnrollCard.create(self.request_id(), CARD, list(pins.items()), ward))

    # -- documents ---------------------------------------------------------------
    def documents(self, applicant: Applicant, variant: int, step: str = "reset") -> tuple[list, bool]:
        """(documents, adult_ward): complete for variant % 4 in (0, 1), else incomplete or stale."""
        today = self.now.astimezone(TOKYO).date()
        v = variant % 4
        if applicant is Applicant.HOLDER:
            return ([(D.MY_NUMBER_CARD, "")] if v < 3 else []), False
        if applicant is Applicant.LEGAL_REPRESENTATIVE:
            adult_ward = v == 1
            authority = D.ADULT_GUARDIANSHIP_CERTIFICATE if adult_ward else D.FAMILY_REGISTER
            issued = today if v != 2 else today.replace(year=today.year - 1)  # 2: stale
            docs = [(D.MY_NUMBER_CARD, ""), (D.PUBLIC_PHOTO_ID, ""), (D.OTHER_ID, ""), (authority, issued.isoformat())]
            return (docs if v < 3 else [(D.OTHER_ID, "")]), adult_ward
        if step == "inquiry":
            return ([(D.MY_NUMBER_CARD, ""), (D.OTHER_ID, "")] if v < 3 else [(D.OTHER_ID, "")]), False
        complete = [(D.MY_NUMBER_CARD, ""), (D.INQUIRY_FORM, ""), (D.POWER_OF_ATTORNEY, ""), (D.PUBLIC_PHOTO_ID, "")]
        return (complete if v < 3 else complete[:2]), False

    def applicant(self, variant: int) -> Applicant:
        return Applicant.LEGAL_REPRESENTATIVE if variant % 8 >= 4 else Applicant.HOLDER

    # -- one abstract action -----------------------------------------------------------
    def act(self, a: Action) -> None:
        self.now += STEPS[a.step % len(STEPS)]
        t, rid = a.pin_type, self.request_id()
        right_pin = self.pins.get(t, NEW_PINS[t][0])
        pin = right_pin if a.right else _wrong(t, self.pins.get(t))
        new_pin = NEW_PINS[t][a.variant % 2]
        if a.kind == "verify":
            self.do(VerifyPin.create(rid, CARD, t, pin))
        elif a.kind == "change":
            self.do(ChangePin.create(rid, CARD, t, pin, new_pin))
        elif a.kind in ("reset", "unlock", "resume"):
            applicant = self.applicant(a.variant)
            docs, adult_ward = self.documents(applicant, a.variant)
            if a.kind == "reset":
                self.do(ResetPin.create(rid, CARD, t, new_pin, applicant, docs, adult_ward, None))
            elif a.kind == "unlock":
                self.do(UnlockPin.create(rid, CARD, t, applicant, docs, adult_ward, None))
            else:
                self.do(ResumeCard.create(rid, CARD, applicant, docs, adult_ward, None))
        elif a.kind == "suspend":
            self.do(SuspendCard.create(rid, CARD, ("lost", "stolen", "other")[a.variant % 3], None))
        elif a.kind == "request_proxy":
            docs, _ = self.documents(Applicant.PROXY, a.variant, "inquiry")
            self.do(RequestProxyReset.create(rid, CARD, t, docs, None))
        elif a.kind == "complete_proxy":
            docs, _ = self.documents(Applicant.PROXY, a.variant, "completion")
            inquiry = self.state.inquiries.get(t)
            inquiry_id = inquiry.inquiry_id if inquiry and a.variant % 5 else "id-99999999"
            code = self.codes.get(inquiry_id, "") if a.right else "99999999"
            self.do(CompleteProxyReset.create(rid, CARD, t, inquiry_id, code or "99999999", new_pin, docs, None))
        elif a.kind in ("reserve", "kiosk"):
            chain = ("chain-a", None)[a.variant % 2]
            allows = guards.any_chain_resets_user_certificate(self.policy)
            if a.kind == "kiosk":
                allows = self.policy.chain(chain).resets_user_certificate
            proving = guards.store_proving_pin(t, allows) or USER
            proving_pin = self.pins.get(proving, "1234") if a.right else _wrong(proving, self.pins.get(proving))
            if a.kind == "reserve":
                self.do(ReserveStoreReset.create(rid, CARD, t, proving_pin))
            else:
                self.do(StoreResetPin.create(rid, CARD, t, proving_pin, new_pin, chain))
        elif a.kind == "enroll":
            self.do(EnrollCard.create(rid, CARD, [(t, new_pin)]))
        else:
            raise AssertionError(a.kind)


actions = st.builds(
    Action,
    kind=st.sampled_from(KINDS),
    pin_type=st.sampled_from(ALL_TYPES),
    right=st.booleans(),
    variant=st.integers(0, 39),
    step=st.integers(0, len(STEPS) - 1),
)
policies = st.builds(
    shipped,
    inquiry_max_wrong_codes=st.integers(1, 3),
    proxy_wrong_codes_per_day=st.integers(1, 6),
    store_chains=st.sampled_from([{}, {"chain-a": StoreChain(resets_user_certificate=True)}]),
)


def run(policy: Policy, pin_types, ward, script) -> Run:
    r = Run(policy)
    r.enroll(tuple(pin_types), ward)
    for a in script:
        r.act(a)
    return r


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@hgiven(
    policy=policies,
    pin_types=st.lists(st.sampled_from(ALL_TYPES), min_size=1, max_size=4, unique=True),
    ward=st.sampled_from([None, "nishi"]),
    script=st.lists(actions, max_size=60),
)
def test_every_history_the_rules_produce_is_lawful(policy, pin_types, ward, script):
    stream = run(policy, pin_types, ward, script).stream
    assert first_unlawful(stream) is None
    assert first_unlawful(stream, policy=policy) is None  # the configuration's rules too


# A rule changed in its guard (service/domain/guards.py) is followed by the deciders and the lawful check
# alike: under the changed rule, every history the deciders produce is lawful.
RULE_CHANGES = {
    "expired": lambda expires_at, at: at > expires_at,  # good up to and including its expiry instant
    "inquiry_voided": lambda attempts_left: attempts_left <= 1,  # voided one wrong code early
    "kiosk_open": lambda policy, at: True,  # kiosks around the clock
    "locks": lambda pin_type, failures: failures >= retry_limit(pin_type) - 1,  # locked one failure early
    # the day's bound of wrong proxy codes one code early
    "proxy_codes_exhausted": lambda policy, state, t, at: (
        guards.wrong_codes_today(state, t, at) >= policy.proxy_wrong_codes_per_day - 1
    ),
}


@pytest.mark.parametrize("guard", RULE_CHANGES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@hgiven(
    policy=policies,
    pin_types=st.lists(st.sampled_from(ALL_TYPES), min_size=1, max_size=4, unique=True),
    ward=st.sampled_from([None, "nishi"]),
    script=st.lists(actions, max_size=60),
)
def test_a_rule_changed_in_its_guard_is_followed_by_both_sides(guard, policy, pin_types, ward, script):
    with patch.object(guards, guard, RULE_CHANGES[guard]):
        stream = run(policy, pin_types, ward, script).stream
        assert first_unlawful(stream, policy=policy) is None


def random_script(rng: random.Random, n: int) -> list[Action]:
    return [
        Action(rng.choice(KINDS), rng.choice(ALL_TYPES), rng.random() < 0.6, rng.randrange(40), rng.randrange(len(STEPS)))
        for _ in range(n)
    ]


def test_long_lawful_walks_produce_every_card_event_and_are_accepted():
    """The generated histories reach every card event type (so the test above
    exercises every rule), and long ones are accepted too."""
    seen: set[type] = set()
    for seed in range(40):
        rng = random.Random(seed)
        chains = {"chain-a": StoreChain(resets_user_certificate=True)} if seed % 2 else {}
        policy = shipped(store_chains=chains, inquiry_max_wrong_codes=1 + seed % 3, proxy_wrong_codes_per_day=2 + seed % 4)
        pin_types = ALL_TYPES if seed % 4 else rng.sample(ALL_TYPES, rng.randint(1, 4))
        stream = run(policy, pin_types, "nishi", random_script(rng, 400)).stream
        assert first_unlawful(stream, policy=policy) is None, seed
        seen.update(type(r.event) for r in stream)
    missing = {cls.__name__ for cls in RULES} - {cls.__name__ for cls in seen}
    assert not missing


@pytest.mark.parametrize("guard", [g for g in RULE_CHANGES if g != "expired"])  # expired: tests/unit/test_guards.py
def test_the_rule_changes_reach_the_walks(guard):
    """Under each changed rule the walks decide something the rule as it is
    finds unlawful: the test above exercises the change."""
    reached = 0
    for seed in range(10):
        rng = random.Random(seed)
        policy = shipped(inquiry_max_wrong_codes=1 + seed % 3, proxy_wrong_codes_per_day=2 + seed % 4)
        with patch.object(guards, guard, RULE_CHANGES[guard]):
            stream = run(policy, ALL_TYPES, "nishi", random_script(rng, 400)).stream
        reached += first_unlawful(stream, policy=policy) is not None
    assert reached


def test_the_generated_histories_hold_each_forgeable_situation():
    """Each refusal and closing reason, each procedure, each purpose of a check: the walks are not trivial."""
    reasons: set[tuple[str, str]] = set()
    for seed in range(40):
        rng = random.Random(seed)
        policy = shipped(inquiry_max_wrong_codes=1 + seed % 3, proxy_wrong_codes_per_day=1 + seed % 4)
        stream = run(policy, ALL_TYPES, None, random_script(rng, 400)).stream
        for r in stream:
            if isinstance(r.event, (LockedPinAttempted, SuspendedCardAttempted, PinVerificationFailed)):
                reasons.add((r.event.type_name, r.event.purpose.value))
            if isinstance(r.event, ProxyInquiryCodeRejected):
                reasons.add(("ProxyInquiryCodeRejected", "again" if r.event.wrong_codes > 1 else "once"))
            if isinstance(r.event, (ResetRefused, ProxyInquiryClosed)):
                reasons.add((r.event.type_name, r.event.reason))
            if isinstance(r.event, PinReset):
                reasons.add(("PinReset", r.event.procedure))
    assert {
        ("ResetRefused", "no_open_inquiry"),
        ("ResetRefused", "proxy_codes_exhausted"),
        ("ResetRefused", "counter_only"),
        ("ResetRefused", "store_closed"),
        ("ResetRefused", "no_reservation"),
        ("ResetRefused", "reservation_expired"),
        ("ProxyInquiryClosed", "superseded"),
        ("ProxyInquiryClosed", "voided"),
        ("ProxyInquiryClosed", "expired"),
        ("PinReset", "counter"),
        ("PinReset", "proxy"),
        ("PinReset", "convenience_store"),
        ("ProxyInquiryCodeRejected", "again"),
        *(
            (name, p.value)
            for name in ("LockedPinAttempted", "SuspendedCardAttempted", "PinVerificationFailed")
            for p in Purpose
            if (name, p) != ("LockedPinAttempted", Purpose.STORE_RESET)
        ),  # rare in a walk: see below
    } <= reasons


def test_a_kiosk_attempt_with_a_proving_pin_locked_after_the_reservation_is_lawful():
    r = Run(shipped())
    r.enroll(ALL_TYPES, None)
    r.act(Action("reserve", SIGNATURE, right=True, variant=0, step=0))
    for _ in range(3):
        r.act(Action("verify", USER, right=False, variant=0, step=0))
    r.act(Action("kiosk", SIGNATURE, right=True, variant=0, step=0))
    assert r.stream[-1].event == LockedPinAttempted(USER, Purpose.STORE_RESET)
    assert first_unlawful(r.stream, policy=r.policy) is None


# ============================================================================
# The table
# ============================================================================


def test_every_card_event_type_has_exactly_one_rule():
    """A new event type in events.py fails here until it has a rule (or is
    declared a terminal-stream event)."""
    all_types = set(EVENT_TYPES.values())
    assert set(RULES) | TERMINAL_EVENTS == all_types
    assert not set(RULES) & TERMINAL_EVENTS


def test_every_event_evolve_applies_has_a_rule():
    evolved = {cls for cls in state_module._apply.registry if cls is not Event and cls is not object}
    assert evolved == set(RULES)


def test_every_rule_says_what_it_cannot_check():
    assert all(rule.unchecked for rule in RULES.values())


def test_an_event_type_without_a_rule_is_unlawful_in_a_card_stream():
    @dataclass(frozen=True)
    class PinForgotten(Event):
        type_name: ClassVar[str] = "PinForgotten"
        pin_type: PinType

    found = check(CardEnrolled(ALL_TYPES), PinForgotten(USER))
    assert (found.version, found.event_type) == (2, "PinForgotten") and "no rule" in found.reason
    found = check(CardEnrolled(ALL_TYPES), AccessDenied("VerifyPin", "auditor", CARD))
    assert (found.version, found.event_type) == (2, "AccessDenied") and "terminal" in found.reason


# ============================================================================
# Forged histories: named at their first unlawful event
# ============================================================================

T0 = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # noon in Tokyo: kiosks open
VERIFY, CHANGE, RESERVATION_PURPOSE, KIOSK = Purpose.VERIFY, Purpose.CHANGE, Purpose.STORE_RESERVATION, Purpose.STORE_RESET
HOLDER_CARD = ("my_number_card",)


def history(*commands, start: datetime = T0) -> list[Recorded]:
    """A stream: each argument is one command's events (an event, or a tuple
    of events appended together, at one instant); commands a minute apart."""
    out: list[Recorded] = []
    for i, command in enumerate(commands):
        for e in command if isinstance(command, tuple) else (command,):
            out.append(Recorded(e, len(out) + 1, start + timedelta(minutes=i)))
    return out


def check(*commands, policy: Policy | None = None) -> Unlawful | None:
    return first_unlawful(history(*commands), policy=policy)


def assert_unlawful(found: Unlawful | None, version: int, event_type: str, *words: str) -> None:
    assert found is not None, "the forged history was accepted"
    assert (found.version, found.event_type) == (version, event_type), found
    for word in words:
        assert word in found.reason, found.reason


def locked(pin_type: PinType) -> list:
    """The commands of a PIN locked by wrong verifies: the last failure and the lock together."""
    n = 5 if pin_type is SIGNATURE else 3
    return [*(failed(pin_type, k) for k in range(1, n)), (failed(pin_type, n), PinLocked(pin_type, n))]


ENROLLED = CardEnrolled(ALL_TYPES, "nishi")


def test_the_helpers_own_histories_are_lawful():
    assert check(ENROLLED, *locked(USER), *locked(SIGNATURE), PinReset(USER, "counter", "holder", HOLDER_CARD)) is None
    assert check() is None  # an empty stream: nothing unlawful (no card)


# -- locks --------------------------------------------------------------------------------


def test_a_locked_pin_silently_unlocked_is_named_at_the_first_check_after_the_lock():
    found = check(ENROLLED, *locked(USER), failed(USER, 1), PinVerified(USER))
    assert_unlawful(found, 6, "PinVerificationFailed", "user_certificate PIN is locked", "never checked")


def test_a_verify_of_a_locked_pin():
    assert_unlawful(check(ENROLLED, *locked(USER), PinVerified(USER)), 6, "PinVerified", "locked")
    assert_unlawful(check(ENROLLED, *locked(SIGNATURE), PinChanged(SIGNATURE)), 8, "PinChanged", "locked")


def test_a_lock_without_the_consecutive_failures():
    assert_unlawful(check(ENROLLED, PinLocked(USER, 3)), 2, "PinLocked", "limit", "had 0 consecutive failures")
    found = check(ENROLLED, failed(USER, 1), failed(USER, 2), PinLocked(USER, 3))
    assert_unlawful(found, 4, "PinLocked", "limit of 3", "had 2 consecutive failures")
    # a success in between starts the count afresh
    found = check(ENROLLED, failed(SIGNATURE, 1), failed(SIGNATURE, 2), PinVerified(SIGNATURE), failed(SIGNATURE, 3))
    assert_unlawful(found, 5, "PinVerificationFailed", "records 3", "which had 0")


def test_a_lock_comes_in_the_same_command_as_the_failure_that_reaches_the_limit():
    # the failure and the lock a minute apart: two commands
    found = check(ENROLLED, failed(USER, 1), failed(USER, 2), failed(USER, 3), PinLocked(USER, 3))
    assert_unlawful(found, 5, "PinLocked", "version 4 (PinVerificationFailed)", "PinLocked of the user_certificate PIN")
    # the lock must name the limit
    found = check(ENROLLED, failed(USER, 1), failed(USER, 2), (failed(USER, 3), PinLocked(USER, 2)))
    assert_unlawful(found, 5, "PinLocked", "records 2 consecutive failures")


def test_a_lock_of_a_locked_pin():
    assert_unlawful(check(ENROLLED, *locked(USER), PinLocked(USER, 3)), 6, "PinLocked", "already locked")


def test_failures_counting_past_the_limit_without_a_lock():
    found = check(ENROLLED, failed(USER, 1), failed(USER, 2), failed(USER, 3), failed(USER, 4))
    assert_unlawful(found, 5, "PinVerificationFailed", "version 4", "PinLocked")
    # a stream that ends at the failure that reaches the limit lost its lock
    assert_unlawful(check(ENROLLED, failed(USER, 1), failed(USER, 2), failed(USER, 3)), 4, "PinVerificationFailed", "ends")


def test_a_failure_counter_that_jumps_or_lies_about_the_remaining_tries():
    found = check(ENROLLED, failed(USER, 1), failed(USER, 3))
    assert_unlawful(found, 3, "PinVerificationFailed", "records 3", "which had 1")
    found = check(ENROLLED, PinVerificationFailed(SIGNATURE, VERIFY, 1, 2))
    assert_unlawful(found, 2, "PinVerificationFailed", "2 remaining tries", "5 - 1")


def test_an_attempt_recorded_as_locked_on_a_pin_that_is_not():
    found = check(ENROLLED, LockedPinAttempted(USER, VERIFY))
    assert_unlawful(found, 2, "LockedPinAttempted", "not locked")
    assert check(ENROLLED, *locked(USER), LockedPinAttempted(USER, VERIFY), LockedPinAttempted(USER, CHANGE)) is None


# -- enrolment, PIN types, versions, time ------------------------------------------------------


def test_two_enrolments():
    assert_unlawful(check(ENROLLED, PinVerified(USER), ENROLLED), 3, "CardEnrolled", "already enrolled")


def test_the_first_event_is_an_enrolment():
    assert_unlawful(check(PinVerified(USER)), 1, "PinVerified", "first event", "CardEnrolled")


def test_an_event_for_a_pin_type_the_card_never_enrolled():
    found = check(CardEnrolled((USER, SIGNATURE)), PinVerified(USER), failed(RESIDENT, 1))
    assert_unlawful(found, 3, "PinVerificationFailed", "never enrolled a resident_registry PIN")
    found = check(CardEnrolled((USER,)), PinReset(SIGNATURE, "counter", "holder", HOLDER_CARD))
    assert_unlawful(found, 2, "PinReset", "never enrolled a signature PIN")


def test_an_enrolment_without_pins_or_with_one_twice():
    assert_unlawful(check(CardEnrolled(())), 1, "CardEnrolled", "at least one PIN")
    assert_unlawful(check(CardEnrolled((USER, USER))), 1, "CardEnrolled", "once")


def test_versions_run_one_to_n():
    stream = history(ENROLLED, PinVerified(USER), PinVerified(USER))
    gap = [stream[0], stream[1], Recorded(stream[2].event, 4, stream[2].occurred_at)]
    assert_unlawful(first_unlawful(gap), 4, "PinVerified", "expected 3, got 4")
    repeat = [stream[0], stream[1], Recorded(stream[2].event, 2, stream[2].occurred_at)]
    assert_unlawful(first_unlawful(repeat), 2, "PinVerified", "expected 3, got 2")
    assert_unlawful(first_unlawful(stream[1:]), 2, "PinVerified", "expected 1, got 2")


def test_time_does_not_go_back_within_a_stream():
    stream = history(ENROLLED, PinVerified(USER), PinVerified(USER))
    back = [*stream[:2], Recorded(stream[2].event, 3, stream[1].occurred_at - timedelta(seconds=1))]
    assert_unlawful(first_unlawful(back), 3, "PinVerified", "before version 2", "does not go back")
    assert first_unlawful(back, clock_tolerance=timedelta(seconds=5)) is None  # clocks of several instances
    same = [*stream[:2], Recorded(stream[2].event, 3, stream[1].occurred_at)]
    assert first_unlawful(same) is None  # one batch: one instant


def test_the_first_unlawful_event_is_named_not_a_later_one():
    found = check(ENROLLED, PinLocked(USER, 3), ENROLLED, PinVerified(RESIDENT))
    assert_unlawful(found, 2, "PinLocked")


def test_a_payload_the_fold_cannot_apply_is_unlawful_not_an_exception():
    found = check(ENROLLED, ProxyInquiryIssued(USER, "id-00000001", "next tuesday", ("my_number_card", "other_id")))
    assert_unlawful(found, 2, "ProxyInquiryIssued", "expires_at")


# -- suspension -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event, words",
    [
        (PinVerified(USER), "suspended"),
        (failed(USER, 1), "suspended"),
        (PinChanged(SIGNATURE), "suspended"),
        (LockedPinAttempted(USER, VERIFY), "suspended"),
        (CardSuspended("stolen"), "already suspended"),
        (ResetRefused(SIGNATURE, "convenience_store", "no_reservation"), "suspended"),
    ],
)
def test_events_only_an_active_card_can_have(event, words):
    assert_unlawful(check(ENROLLED, CardSuspended("lost"), event), 3, event.type_name, words)


def test_a_store_reservation_on_a_suspended_card():
    found = check(ENROLLED, CardSuspended("lost"), (PinVerified(USER), reserved()))
    assert_unlawful(found, 3, "PinVerified", "suspended")


def test_what_a_suspended_card_may_have():
    assert (
        check(
            ENROLLED,
            CardSuspended("lost"),
            SuspendedCardAttempted(USER, VERIFY),
            SuspendedCardAttempted(USER, KIOSK),
            SuspendedCardAttempted(USER, RESERVATION_PURPOSE),
            PinReset(USER, "counter", "holder", HOLDER_CARD),  # decide_reset does not ask whether the card is suspended
            PinUnlocked(SIGNATURE, "holder", HOLDER_CARD),
            CounterProcedureRefused("resume", ("documents/my_number_card",)),
            CardResumed("holder", HOLDER_CARD),
        )
        is None
    )


def test_a_suspended_attempt_on_an_active_card():
    assert_unlawful(check(ENROLLED, SuspendedCardAttempted(USER, VERIFY)), 2, "SuspendedCardAttempted", "active")


def test_a_resume_of_an_active_card():
    assert_unlawful(check(ENROLLED, CardResumed("holder", HOLDER_CARD)), 2, "CardResumed", "active")
    found = check(ENROLLED, CardSuspended("lost"), CardResumed("holder", HOLDER_CARD), CardResumed("holder", HOLDER_CARD))
    assert_unlawful(found, 4, "CardResumed", "active")


def test_a_suspension_for_no_known_reason():
    assert_unlawful(check(ENROLLED, CardSuspended("bored")), 2, "CardSuspended", "bored")


# -- counter procedures ---------------------------------------------------------------------


def test_a_reset_or_unlock_of_a_pin_that_is_not_locked_is_lawful():
    """decide_reset / decide_unlock do not require a lock: forgetting a PIN is enough."""
    assert check(ENROLLED, PinReset(USER, "counter", "holder", HOLDER_CARD)) is None
    assert check(ENROLLED, PinUnlocked(SIGNATURE, "holder", HOLDER_CARD)) is None


def test_a_counter_reset_with_an_incomplete_checklist():
    found = check(ENROLLED, *locked(USER), PinReset(USER, "counter", "holder", ()))
    assert_unlawful(found, 6, "PinReset", "incomplete", "documents/my_number_card")
    found = check(ENROLLED, PinUnlocked(USER, "legal_representative", ("my_number_card", "other_id")))
    assert_unlawful(found, 2, "PinUnlocked", "incomplete", "documents/ids", "documents/authority")
    representative = ("my_number_card", "public_photo_id", "other_id", "adult_guardianship_certificate")
    assert check(ENROLLED, PinUnlocked(USER, "legal_representative", representative)) is None


def test_a_reset_by_an_unknown_procedure_or_applicant():
    assert_unlawful(check(ENROLLED, PinReset(USER, "telepathy", "holder", ())), 2, "PinReset", "unknown reset procedure")
    assert_unlawful(check(ENROLLED, PinReset(USER, "counter", "proxy", HOLDER_CARD)), 2, "PinReset", "proxy cannot")
    assert_unlawful(check(ENROLLED, PinReset(USER, "counter", "holder", ("passport",))), 2, "PinReset", "unknown document")


def test_a_counter_refusal_names_what_its_checklist_can_miss():
    assert check(ENROLLED, CounterProcedureRefused("proxy_completion", ("documents/inquiry_form",))) is None
    found = check(ENROLLED, CounterProcedureRefused("proxy_inquiry", ("documents/inquiry_form",)))
    assert_unlawful(found, 2, "CounterProcedureRefused", "cannot miss")
    assert_unlawful(check(ENROLLED, CounterProcedureRefused("reset", ())), 2, "CounterProcedureRefused", "names what")
    found = check(ENROLLED, CounterProcedureRefused("bribe", ("documents/ids",)))
    assert_unlawful(found, 2, "CounterProcedureRefused", "unknown counter procedure")


def test_an_unknown_stored_word_is_unlawful_not_an_exception():
    """Read from a store, a word this release does not know stays the string it was (upcasting.py)."""

    def stored(type_name, pin_type, payload):
        return event_from_stored(type_name, 1, pin_type, payload)

    found = check(ENROLLED, stored("ResetRefused", "signature", {"procedure": "convenience_store", "reason": "bored"}))
    assert_unlawful(found, 2, "ResetRefused", "no rule refuses", "'bored'")
    found = check(
        ENROLLED, stored("PinReset", "user_certificate", {"procedure": "telepathy", "applicant": "holder", "documents": []})
    )
    assert_unlawful(found, 2, "PinReset", "unknown reset procedure 'telepathy'")
    found = check(ENROLLED, stored("CounterProcedureRefused", None, {"procedure": "bribe", "missing": ["documents/ids"]}))
    assert_unlawful(found, 2, "CounterProcedureRefused", "unknown counter procedure 'bribe'")
    closed = stored("ProxyInquiryClosed", "user_certificate", {"inquiry_id": "id-00000001", "reason": "lost"})
    assert_unlawful(check(ENROLLED, issued(), closed), 3, "ProxyInquiryClosed", "unknown reason 'lost'")
    known = stored("ResetRefused", "resident_registry", {"procedure": "store_reservation", "reason": "counter_only"})
    assert known.reason is RefusalReason.COUNTER_ONLY and check(ENROLLED, known) is None


# -- a proxy's two visits ---------------------------------------------------------------------

INQUIRY_DOCS = ("my_number_card", "other_id")
COMPLETION_DOCS = ("my_number_card", "inquiry_form", "power_of_attorney", "public_photo_id")


def issued(inquiry_id="id-00000001", at=T0, pin_type=USER, days=30):
    return ProxyInquiryIssued(pin_type, inquiry_id, (at + timedelta(days=days)).isoformat(), INQUIRY_DOCS)


def rejected(wrong, remaining, inquiry_id="id-00000001"):
    return ProxyInquiryCodeRejected(USER, inquiry_id, wrong, remaining)


PROXY_RESET = PinReset(USER, "proxy", "proxy", COMPLETION_DOCS)


def test_a_lawful_proxy_history():
    assert (
        check(
            ENROLLED,
            issued(at=T0 + timedelta(minutes=1)),
            (ProxyInquiryClosed(USER, "id-00000001", "superseded"), issued("id-00000002", T0 + timedelta(minutes=2))),
            rejected(1, 1, "id-00000002"),
            (rejected(2, 0, "id-00000002"), ProxyInquiryClosed(USER, "id-00000002", "voided")),
            issued("id-00000003", T0 + timedelta(minutes=5)),
            PROXY_RESET,
            ResetRefused(USER, "proxy", "no_open_inquiry"),
            policy=shipped(inquiry_max_wrong_codes=2, inquiry_reissue_after=timedelta(minutes=1)),
        )
        is None
    )


def test_a_new_inquiry_is_refused_while_a_recent_one_is_open_and_supersedes_it_after():
    """guards.inquiry_reissue_refused, judged with the policy (the issue is the expiry less the validity)."""
    too_soon = ResetRefused(USER, "proxy_inquiry", "inquiry_open", repeated=4)
    reissue_after = shipped(inquiry_reissue_after=timedelta(minutes=10))
    assert check(ENROLLED, issued(at=T0 + timedelta(minutes=1)), too_soon, policy=reissue_after) is None
    assert check(ENROLLED, issued(at=T0 + timedelta(minutes=1)), too_soon) is None  # without the policy: an open inquiry
    assert_unlawful(check(ENROLLED, too_soon), 2, "ResetRefused", "only while one is open")
    found = check(ENROLLED, issued(at=T0 + timedelta(minutes=1)), too_soon, policy=shipped(inquiry_reissue_after=timedelta(0)))
    assert_unlawful(found, 3, "ResetRefused", "supersedes it")
    soon = (ProxyInquiryClosed(USER, "id-00000001", "superseded"), issued("id-00000002", T0 + timedelta(minutes=2)))
    found = check(ENROLLED, issued(at=T0 + timedelta(minutes=1)), soon, policy=reissue_after)
    assert_unlawful(found, 3, "ProxyInquiryClosed", "a new one is refused")
    assert_unlawful(check(ENROLLED, ResetRefused(USER, "proxy", "no_open_inquiry", repeated=-1)), 2, "ResetRefused", "negative")


def test_a_counter_refusal_names_its_pin_type_but_resume_none():
    assert check(ENROLLED, CounterProcedureRefused("reset", ("documents/ids",), USER, repeated=2)) is None
    assert check(ENROLLED, CounterProcedureRefused("resume", ("documents/ids",))) is None
    found = check(ENROLLED, CounterProcedureRefused("resume", ("documents/ids",), USER))
    assert_unlawful(found, 2, "CounterProcedureRefused", "for no PIN")
    only_user = CardEnrolled((USER,))
    found = check(only_user, CounterProcedureRefused("reset", ("documents/ids",), SIGNATURE))
    assert_unlawful(found, 2, "CounterProcedureRefused", "never enrolled")


def test_a_proxy_reset_without_an_open_inquiry():
    assert_unlawful(check(ENROLLED, *locked(USER), PROXY_RESET), 6, "PinReset", "no proxy inquiry is open")
    found = check(ENROLLED, issued(), (rejected(1, 0), ProxyInquiryClosed(USER, "id-00000001", "voided")), PROXY_RESET)
    assert_unlawful(found, 5, "PinReset", "no proxy inquiry is open")


def test_a_proxy_reset_after_the_inquiry_expired():
    stream = history(ENROLLED, issued(at=T0 + timedelta(minutes=1), days=1))
    late = Recorded(PROXY_RESET, 3, T0 + timedelta(days=2))
    assert_unlawful(first_unlawful([*stream, late]), 3, "PinReset", "expired")


def test_an_inquiry_code_rejected_without_an_inquiry_or_counting_wrong():
    assert_unlawful(check(ENROLLED, rejected(1, 2)), 2, "ProxyInquiryCodeRejected", "no proxy inquiry is open")
    assert_unlawful(check(ENROLLED, issued(), rejected(2, 1)), 3, "ProxyInquiryCodeRejected", "a wrong code adds one")
    found = check(ENROLLED, issued(), rejected(1, 0), rejected(2, 0))
    assert_unlawful(found, 4, "ProxyInquiryCodeRejected", "version 3", "voided")


def test_the_configured_number_of_wrong_codes_is_checked_with_the_policy():
    forged = (ENROLLED, issued(at=T0 + timedelta(minutes=1)), rejected(1, 5))
    assert check(*forged) is None  # the limit is configuration
    assert_unlawful(check(*forged, policy=shipped()), 3, "ProxyInquiryCodeRejected", "configured 3")


def counted(wrong, remaining, today, inquiry_id="id-00000001"):
    """A wrong code as recorded since the daily bound: with the card's count for the day."""
    return ProxyInquiryCodeRejected(USER, inquiry_id, wrong, remaining, today)


BOUNDED = shipped(inquiry_max_wrong_codes=3, proxy_wrong_codes_per_day=5)
EXHAUSTED = ResetRefused(USER, "proxy", "proxy_codes_exhausted")
# five wrong codes on one Tokyo day, over a voided inquiry and its re-issue (versions 1-9, from T0: noon in Tokyo)
FIVE_TODAY = (
    ENROLLED,
    issued(at=T0 + timedelta(minutes=1)),
    counted(1, 2, 1),
    counted(2, 1, 2),
    (counted(3, 0, 3), ProxyInquiryClosed(USER, "id-00000001", "voided")),
    issued("id-00000002", T0 + timedelta(minutes=5)),
    counted(1, 2, 4, "id-00000002"),
    counted(2, 1, 5, "id-00000002"),
)


def test_wrong_codes_counted_across_inquiries_up_to_the_daily_bound_then_refused_is_lawful():
    assert check(*FIVE_TODAY, EXHAUSTED, EXHAUSTED, policy=BOUNDED) is None
    assert check(*FIVE_TODAY, EXHAUSTED) is None


def test_a_wrong_code_counts_one_more_that_day_across_inquiries():
    forged = (*FIVE_TODAY[:6], counted(1, 2, 1, "id-00000002"))  # counted afresh on a re-issued inquiry
    assert_unlawful(check(*forged), 8, "ProxyInquiryCodeRejected", "had 3 that day", "across inquiries")


def test_the_count_starts_afresh_on_the_next_tokyo_day():
    stream = history(*FIVE_TODAY)
    tomorrow = T0 + timedelta(hours=12)  # 00:00 in Tokyo
    after = [
        Recorded(counted(3, 0, 1, "id-00000002"), 10, tomorrow),
        Recorded(ProxyInquiryClosed(USER, "id-00000002", "voided"), 11, tomorrow),
    ]
    assert first_unlawful([*stream, *after], policy=BOUNDED) is None
    before = [Recorded(counted(3, 0, 1, "id-00000002"), 10, tomorrow - timedelta(microseconds=1))]
    assert_unlawful(first_unlawful([*stream, *before], policy=BOUNDED), 10, "ProxyInquiryCodeRejected", "had 5 that day")


def test_no_code_is_checked_beyond_the_daily_bound_with_the_policy():
    sixth = (counted(3, 0, 6, "id-00000002"), ProxyInquiryClosed(USER, "id-00000002", "voided"))
    assert check(*FIVE_TODAY, sixth) is None  # the bound is configuration
    assert_unlawful(check(*FIVE_TODAY, sixth, policy=BOUNDED), 10, "ProxyInquiryCodeRejected", "daily bound of 5")
    assert_unlawful(check(*FIVE_TODAY, PROXY_RESET, policy=BOUNDED), 10, "PinReset", "no code is checked")
    assert check(*FIVE_TODAY[:-1], PROXY_RESET, policy=BOUNDED) is None  # at four, the right code is checked


def test_a_refusal_at_the_daily_bound_only_at_it():
    assert_unlawful(check(*FIVE_TODAY[:-1], EXHAUSTED, policy=BOUNDED), 9, "ResetRefused", "below the configured daily bound")
    assert_unlawful(check(ENROLLED, issued(), EXHAUSTED), 3, "ResetRefused", "no wrong proxy code")
    assert_unlawful(check(ENROLLED, EXHAUSTED), 2, "ResetRefused", "no proxy inquiry is open")


def test_a_wrong_code_without_the_days_count_after_counted_ones():
    found = check(*FIVE_TODAY[:3], rejected(2, 1))
    assert_unlawful(found, 4, "ProxyInquiryCodeRejected", "without the day's count")


def test_an_inquiry_voided_without_the_last_wrong_code():
    found = check(ENROLLED, issued(), ProxyInquiryClosed(USER, "id-00000001", "voided"))
    assert_unlawful(found, 3, "ProxyInquiryClosed", "wrong code that uses the last attempt")


def test_an_inquiry_closed_as_expired_before_its_expiry_or_never_issued():
    expired = ProxyInquiryClosed(USER, "id-00000001", "expired")
    assert_unlawful(check(ENROLLED, issued(), expired), 3, "ProxyInquiryClosed", "expires only")
    assert_unlawful(check(ENROLLED, expired), 2, "ProxyInquiryClosed", "no proxy inquiry")
    found = check(ENROLLED, issued(), ProxyInquiryClosed(USER, "id-00000009", "superseded"))
    assert_unlawful(found, 3, "ProxyInquiryClosed", "not id-00000009")


def test_a_second_inquiry_while_one_is_open_or_a_supersession_without_a_new_one():
    assert_unlawful(check(ENROLLED, issued(), issued("id-00000002")), 3, "ProxyInquiryIssued", "still open")
    found = check(ENROLLED, issued(), ProxyInquiryClosed(USER, "id-00000001", "superseded"), PinVerified(USER))
    assert_unlawful(found, 4, "PinVerified", "ProxyInquiryIssued")
    found = check(ENROLLED, issued(), (ProxyInquiryClosed(USER, "id-00000001", "superseded"), issued("id-00000001")))
    assert_unlawful(found, 4, "ProxyInquiryIssued", "fresh id")


def test_the_inquiry_validity_is_checked_with_the_policy():
    forged = (ENROLLED, issued(at=T0 + timedelta(minutes=1), days=365))
    assert check(*forged) is None
    assert_unlawful(check(*forged, policy=shipped()), 2, "ProxyInquiryIssued", "configured validity")


# -- the convenience store ---------------------------------------------------------------------


def reserved(pin_type=SIGNATURE, proving=USER, at=T0, reservation_id="id-00000001", hours=24):
    return StoreResetReserved(pin_type, reservation_id, proving.value, (at + timedelta(hours=hours)).isoformat())


STORE_RESET = PinReset(SIGNATURE, "convenience_store", "holder", ())


def test_a_lawful_store_history():
    assert (
        check(
            ENROLLED,
            *locked(SIGNATURE),
            (PinVerified(USER), reserved(at=T0 + timedelta(minutes=6))),
            PinVerificationFailed(USER, KIOSK, 1, 2),
            (PinVerified(USER), STORE_RESET),
            ResetRefused(SIGNATURE, "convenience_store", "no_reservation"),
            ResetRefused(RESIDENT, "store_reservation", "counter_only"),
            policy=shipped(),
        )
        is None
    )


def test_a_reservation_without_the_proving_pin_or_by_the_wrong_pin():
    found = check(ENROLLED, reserved(at=T0 + timedelta(minutes=1)))
    assert_unlawful(found, 2, "StoreResetReserved", "PinVerified of the user_certificate PIN")
    found = check(ENROLLED, (PinVerified(RESIDENT), reserved(proving=RESIDENT, at=T0 + timedelta(minutes=1))))
    assert_unlawful(found, 3, "StoreResetReserved", "proved by the user_certificate PIN")
    found = check(ENROLLED, (PinVerified(USER), reserved(RESIDENT, at=T0 + timedelta(minutes=1))))
    assert_unlawful(found, 3, "StoreResetReserved", "only at a counter")


def test_a_user_certificate_store_reset_needs_a_chain_that_allows_it():
    forged = (ENROLLED, (PinVerified(SIGNATURE), reserved(USER, SIGNATURE, T0 + timedelta(minutes=1))))
    assert check(*forged) is None  # the chains are configuration
    assert_unlawful(check(*forged, policy=shipped()), 3, "StoreResetReserved", "only at a counter")
    chains = shipped(store_chains={"chain-a": StoreChain(resets_user_certificate=True)})
    assert check(*forged, policy=chains) is None


def test_a_kiosk_reset_without_a_reservation_or_after_it_expired():
    found = check(ENROLLED, *locked(SIGNATURE), (PinVerified(USER), STORE_RESET))
    assert_unlawful(found, 9, "PinReset", "no store reservation")
    stream = history(ENROLLED, (PinVerified(USER), reserved(at=T0 + timedelta(minutes=1))))
    late = [Recorded(PinVerified(USER), 4, T0 + timedelta(hours=30)), Recorded(STORE_RESET, 5, T0 + timedelta(hours=30))]
    assert_unlawful(first_unlawful([*stream, *late]), 5, "PinReset", "expired")


def test_a_kiosk_reset_without_the_proving_pin_in_the_same_command():
    found = check(ENROLLED, (PinVerified(USER), reserved(at=T0 + timedelta(minutes=1))), STORE_RESET)
    assert_unlawful(found, 4, "PinReset", "PinVerified of the user_certificate PIN")
    found = check(ENROLLED, (PinVerified(USER), reserved(at=T0 + timedelta(minutes=1))), PinVerified(USER), STORE_RESET)
    assert_unlawful(found, 5, "PinReset", "same instant")


def test_a_kiosk_check_of_the_proving_pin_without_a_reservation():
    found = check(ENROLLED, PinVerificationFailed(USER, KIOSK, 1, 2))
    assert_unlawful(found, 2, "PinVerificationFailed", "no store reservation is proved by the user_certificate PIN")
    found = check(ENROLLED, *locked(USER), LockedPinAttempted(USER, KIOSK))
    assert_unlawful(found, 6, "LockedPinAttempted", "no store reservation")


def test_kiosk_hours_are_checked_with_the_policy():
    night = T0 + timedelta(hours=15)  # 03:00 in Tokyo
    stream = [
        *history(ENROLLED, (PinVerified(USER), reserved(at=T0 + timedelta(minutes=1)))),
        Recorded(PinVerified(USER), 4, night),
        Recorded(STORE_RESET, 5, night),
    ]
    assert first_unlawful(stream) is None
    assert_unlawful(first_unlawful(stream, policy=shipped()), 5, "PinReset", "kiosks run 06:30-23:00", "03:00")
    store_closed = ResetRefused(SIGNATURE, "convenience_store", "store_closed")
    closed = [*stream[:3], Recorded(store_closed, 4, T0 + timedelta(minutes=2))]  # at noon
    assert first_unlawful([*stream[:3], Recorded(store_closed, 4, night)], policy=shipped()) is None
    assert_unlawful(first_unlawful(closed, policy=shipped()), 4, "ResetRefused", "within the kiosk hours")


def test_kiosk_refusals_follow_the_kiosks_order():
    assert_unlawful(
        check(ENROLLED, ResetRefused(SIGNATURE, "convenience_store", "counter_only")), 2, "ResetRefused", "every store"
    )
    reserve = (PinVerified(USER), reserved(at=T0 + timedelta(minutes=1)))
    found = check(ENROLLED, reserve, ResetRefused(SIGNATURE, "convenience_store", "no_reservation"))
    assert_unlawful(found, 4, "ResetRefused", "is open")
    found = check(ENROLLED, reserve, ResetRefused(SIGNATURE, "convenience_store", "reservation_expired"))
    assert_unlawful(found, 4, "ResetRefused", "valid until")
    found = check(ENROLLED, ResetRefused(SIGNATURE, "store_reservation", "counter_only"))
    assert_unlawful(found, 2, "ResetRefused", "can be reserved")
    assert check(CardEnrolled((SIGNATURE,)), ResetRefused(SIGNATURE, "store_reservation", "counter_only")) is None
    assert_unlawful(check(ENROLLED, ResetRefused(USER, "proxy", "no_idea")), 2, "ResetRefused", "no rule refuses")


def test_an_event_a_counter_recorded_out_of_its_hours_or_wards_is_unlawful_with_the_policy():
    """decision.counter_gate refuses a counter whatever it asks; an event
    bearing an office was decided in its hours, for a ward it serves."""
    tuesday_10 = datetime(2026, 6, 2, 10, 0, tzinfo=TOKYO)
    enrolled = Recorded(ENROLLED, 1, tuesday_10, "nishi-ward-office")
    night = Recorded(PinVerified(USER), 2, tuesday_10 + timedelta(hours=17), "nishi-ward-office")  # 03:00
    assert first_unlawful([enrolled, night]) is None  # without the policy, hours are not judged
    assert_unlawful(first_unlawful([enrolled, night], policy=shipped()), 2, "PinVerified", "nishi-ward-office", "out_of_hours")
    by_day = Recorded(PinVerified(USER), 2, tuesday_10 + timedelta(hours=1), "nishi-ward-office")
    assert first_unlawful([enrolled, by_day], policy=shipped()) is None
    elsewhere = Recorded(ENROLLED, 1, tuesday_10, "tsurumi-ward-office")  # serves tsurumi, not nishi
    assert_unlawful(first_unlawful([elsewhere], policy=shipped()), 1, "CardEnrolled", "out_of_jurisdiction")
    unknown = Recorded(ENROLLED, 1, tuesday_10, "no-such-office")
    assert_unlawful(first_unlawful([unknown], policy=shipped()), 1, "CardEnrolled", "unknown_office")
    call_centre = Recorded(CardSuspended("lost"), 2, tuesday_10 + timedelta(hours=17))  # no office: around the clock
    assert first_unlawful([enrolled, call_centre], policy=shipped()) is None


def test_an_enrolment_names_a_ward_an_office_serves_with_the_policy():
    atlantis = CardEnrolled(ALL_TYPES, "atlantis")
    assert check(atlantis) is None  # a well-formed ward id: without the policy, the offices are unknown
    assert_unlawful(check(atlantis, policy=shipped()), 1, "CardEnrolled", "served by no office")
    assert check(CardEnrolled(ALL_TYPES, None), policy=shipped()) is None
