"""Issue 22, items 5 and 6, in the pure domain (given events / when command /
then events): a terminal's bound of suspensions per window, and a card's
bound of wrong proxy codes per Tokyo day across re-issued inquiries; the
guards both sides share, the terminal window that keeps the suspensions,
and what counts as a failure for the terminal's throttle."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pinlife.domain import guards, throttle
from pinlife.domain.calendar import TOKYO
from pinlife.domain.commands import SuspendCard
from pinlife.domain.errors import LimitReached, NotFound
from pinlife.domain.events import (
    CardSuspended,
    ProxyInquiryClosed,
    ProxyInquiryCodeRejected,
    Recorded,
    RefusalReason,
    ResetProcedure,
    ResetRefused,
    SuspensionRefused,
)
from pinlife.domain.outcomes import CheckOutcome, CheckResult, ProxyCompletion, ProxyResult
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.domain.state import CodeDay, evolve
from pinlife.store.projection import state_message, window_from_row, window_to_row
from tests.unit.helpers import CARD, USER, request_id, then
from tests.unit.test_procedures import NISHI, OPEN, POLICY, at_counter, card, complete_proxy, inquired, proxy_ctx

NIGHT = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)  # 03:00 in Tokyo: the call centre works around the clock
HOUR = timedelta(hours=1)


def suspend(card_id=CARD, office=None):
    return SuspendCard.create(request_id(), card_id, "lost", office)


# -- item 5: suspensions per terminal and window -------------------------------------------


def test_the_default_bound_is_30_suspensions_an_hour():
    assert (Policy().suspensions_per_window, Policy().suspension_window) == (30, HOUR)
    assert (POLICY.suspensions_per_window, POLICY.suspension_window) == (30, HOUR)  # the shipped offices.toml


def test_below_the_bound_a_card_is_suspended():
    made = tuple(NIGHT - timedelta(minutes=m) for m in range(1, 30))  # 29 within the hour
    decision = at_counter(card(), suspend(), now=NIGHT, suspensions=made)
    assert decision.events == (CardSuspended("lost"),) and decision.error is None


def test_at_the_bound_the_call_centre_is_refused_recorded_and_told_when_it_frees_up():
    made = tuple(NIGHT - timedelta(minutes=m) for m in range(30))  # 30 within the hour, the oldest 29 minutes ago
    decision = at_counter(card(), suspend(), now=NIGHT, suspensions=made)
    free_at = NIGHT - timedelta(minutes=29) + HOUR
    assert decision.events == ()  # no card suspended
    assert decision.terminal_events == (SuspensionRefused(CARD, 30, 3600, free_at.isoformat()),)
    assert isinstance(decision.error, LimitReached)
    assert decision.error.retry_after == timedelta(minutes=31) and decision.error.subject == "terminal/suspensions"
    assert f"{free_at.astimezone(TOKYO):%Y-%m-%d %H:%M}" in str(decision.error)


def test_suspensions_older_than_the_window_do_not_count():
    made = tuple(NIGHT - HOUR - timedelta(minutes=m) for m in range(30))  # all an hour ago or more
    assert at_counter(card(), suspend(), now=NIGHT, suspensions=made).events == (CardSuspended("lost"),)


def test_counters_are_bounded_too_and_gated_first():
    made = tuple(OPEN - timedelta(minutes=m) for m in range(30))
    decision = at_counter(card(), suspend(office=NISHI), suspensions=made)
    assert isinstance(decision.error, LimitReached) and decision.events == ()
    closed = at_counter(card(), suspend(office=NISHI), now=NIGHT, suspensions=made)
    assert closed.error is not None and not isinstance(closed.error, LimitReached)  # out of hours, first


def test_a_refused_terminal_learns_nothing_of_the_card():
    made = tuple(NIGHT - timedelta(minutes=m) for m in range(30))
    unknown = at_counter(card()._replace(version=0), suspend("card-unknown"), now=NIGHT, suspensions=made)
    assert isinstance(unknown.error, LimitReached)  # not NotFound
    with pytest.raises(NotFound):
        at_counter(card()._replace(version=0), suspend("card-unknown"), now=NIGHT)


def test_a_configured_bound_and_window():
    policy = replace(POLICY, suspensions_per_window=2, suspension_window=timedelta(minutes=10))
    made = (NIGHT - timedelta(minutes=9), NIGHT - timedelta(minutes=3))
    decision = at_counter(card(), suspend(), now=NIGHT, policy=policy, suspensions=made)
    assert decision.error.retry_after == timedelta(minutes=1)
    assert at_counter(card(), suspend(), now=NIGHT + timedelta(minutes=1), policy=policy, suspensions=made).error is None


@pytest.mark.parametrize(
    "ago, free_in",
    [((), None), ((5,), None), ((5, 10), 50), ((1, 2, 3), 58), ((59, 70, 10), 1), ((60, 61), None)],
)
def test_suspension_free_at(ago, free_in):
    policy = Policy(suspensions_per_window=2)
    made = [NIGHT - timedelta(minutes=m) for m in ago]
    free_at = guards.suspension_free_at(policy, made, NIGHT)
    assert free_at == (None if free_in is None else NIGHT + timedelta(minutes=free_in))


def test_the_terminal_window_keeps_only_the_suspensions_within_it():
    policy = Policy(suspensions_per_window=3)
    window = throttle.TerminalWindow(suspensions=(NIGHT - 2 * HOUR, NIGHT - timedelta(minutes=30)))
    assert throttle.record_suspensions(window, (), NIGHT, policy) is None  # nothing suspended: unchanged
    after = throttle.record_suspensions(window, (CardSuspended("lost"),), NIGHT, policy)
    assert after.suspensions == (NIGHT - timedelta(minutes=30), NIGHT)


def test_a_failure_and_a_throttle_keep_the_suspensions():
    made = (NIGHT - timedelta(minutes=1),)
    window = throttle.TerminalWindow(suspensions=made)
    policy = ThrottlePolicy(max_distinct_cards=1)
    window, _ = throttle.record_failure(window, "card-a", NIGHT, policy)
    window, distinct = throttle.record_failure(window, "card-b", NIGHT, policy)
    assert distinct == 2 and window.throttled_until is not None and window.suspensions == made


def test_the_terminal_row_value_holds_the_suspensions_and_reads_every_older_row():
    at = datetime(2026, 6, 1, 1, 0, tzinfo=UTC)
    failures_only = throttle.TerminalWindow({"card-a": at}, None)
    assert window_to_row(failures_only, lambda t: t) == ('{"card-a": "2026-06-01T01:00:00+00:00"}', None)  # as before
    both = throttle.TerminalWindow({"card-a": at}, at + HOUR, (at, at + timedelta(seconds=1)))
    failures, until = window_to_row(both, lambda t: t)
    assert window_from_row(failures, until, lambda t: t) == both
    suspensions_only = throttle.TerminalWindow(suspensions=(at,))
    assert window_from_row(*window_to_row(suspensions_only, lambda t: t), lambda t: t) == suspensions_only
    assert window_from_row(None, None, lambda t: t) == throttle.TerminalWindow()
    # a card id "failures" in an old row is a card, not the new shape
    assert window_from_row('{"failures": "2026-06-01T01:00:00+00:00"}', None, lambda t: t).last_failure == {"failures": at}


# -- item 6: wrong proxy codes per card, PIN type and Tokyo day ----------------------------


def wrong(state, now=OPEN, policy=POLICY, code="00000000", inquiry_id="inq-00000001"):
    return at_counter(state, complete_proxy(code, inquiry_id), now=now, policy=policy, **proxy_ctx(inquiry_id))


def reissued(state, now=OPEN):
    """A new inquiry (the previous one voided or superseded): its id is inq-00000001 again (proxy_ctx)."""
    return inquired(state, now)


def test_the_default_bound_is_5_wrong_codes_a_day():
    assert Policy().proxy_wrong_codes_per_day == 5 and POLICY.proxy_wrong_codes_per_day == 5


def test_wrong_codes_count_across_reissued_inquiries_and_the_bound_refuses_without_checking_the_code():
    state = inquired(card())
    for n in (1, 2, 3):  # the first inquiry: voided at its third
        decision = wrong(state)
        assert decision.events[0] == ProxyInquiryCodeRejected(USER, "inq-00000001", n, 3 - n, n)
        state = then(state, decision, OPEN)
    assert decision.events[1] == ProxyInquiryClosed(USER, "inq-00000001", "voided")
    state = reissued(state)
    decision = wrong(state)
    assert decision.events == (ProxyInquiryCodeRejected(USER, "inq-00000001", 1, 2, 4),)
    assert decision.outcome == ProxyCompletion(ProxyResult.WRONG_CODE, 1)  # the inquiry takes 2, the card 1 more today
    state = then(state, decision, OPEN)
    decision = wrong(state)
    assert decision.events == (ProxyInquiryCodeRejected(USER, "inq-00000001", 2, 1, 5),)
    assert decision.outcome == ProxyCompletion(ProxyResult.WRONG_CODE, 0)
    state = then(state, decision, OPEN)
    assert state.code_days[USER] == CodeDay(OPEN.astimezone(TOKYO).date(), 5)

    def never(kind, name, value):
        raise AssertionError("a code beyond the daily bound is never checked")

    later = OPEN + timedelta(hours=5)  # 19:00 in Tokyo, the same day
    refused = at_counter(state, complete_proxy(), now=later, code_matches=never)  # even the right code
    assert refused.events == (ResetRefused(USER, ResetProcedure.PROXY, RefusalReason.PROXY_CODES_EXHAUSTED),)
    assert refused.outcome is None and refused.new_pins == {}
    assert isinstance(refused.error, LimitReached)
    midnight = datetime(2026, 6, 2, 0, 0, tzinfo=TOKYO)
    assert refused.error.retry_after == midnight - later and refused.error.subject == f"{CARD}/{USER.value}"
    assert "2026-06-02 00:00" in str(refused.error)
    state = then(state, refused, later)
    # the next Tokyo day the code is checked again, and the count starts afresh
    tomorrow = OPEN + timedelta(days=1)  # the office opens again
    assert wrong(state, now=tomorrow).events == (
        ProxyInquiryCodeRejected(USER, "inq-00000001", 3, 0, 1),
        ProxyInquiryClosed(USER, "inq-00000001", "voided"),
    )
    assert at_counter(state, complete_proxy(), now=tomorrow, **proxy_ctx()).outcome.result is ProxyResult.COMPLETED


def test_each_pin_type_has_its_own_count():
    state = inquired(card())
    state = then(state, wrong(state), OPEN)
    other = evolve(state, Recorded(ProxyInquiryCodeRejected(USER, "inq-00000001", 2, 1, 2), state.version + 1, OPEN))
    assert guards.wrong_codes_today(other, USER, OPEN) == 2
    from pinlife.domain.pins import PinType

    assert guards.wrong_codes_today(other, PinType.SIGNATURE, OPEN) == 0


def test_a_configured_bound_below_an_inquirys_attempts():
    policy = replace(POLICY, proxy_wrong_codes_per_day=1)
    state = inquired(card())
    decision = wrong(state, policy=policy)
    assert decision.outcome == ProxyCompletion(ProxyResult.WRONG_CODE, 0)
    state = then(state, decision, OPEN)
    assert isinstance(wrong(state, policy=policy).error, LimitReached)


def test_wrong_codes_recorded_before_the_count_count_nothing():
    state = inquired(card())
    legacy = ProxyInquiryCodeRejected(USER, "inq-00000001", 1, 2)  # read from a v1 row: wrong_codes_today=0
    state = evolve(state, Recorded(legacy, state.version + 1, OPEN))
    assert state.code_days == {} and state.inquiries[USER].wrong_codes == 1
    assert wrong(state).events[0].wrong_codes_today == 1


def test_the_day_is_the_tokyo_day():
    late = datetime(2026, 6, 1, 14, 59, tzinfo=UTC)  # 23:59 in Tokyo
    state = inquired(card())
    state = evolve(state, Recorded(ProxyInquiryCodeRejected(USER, "inq-00000001", 1, 2, 1), state.version + 1, late))
    assert guards.wrong_codes_today(state, USER, late) == 1
    assert guards.wrong_codes_today(state, USER, late + timedelta(minutes=1)) == 0  # 00:00 the next day
    assert guards.proxy_codes_free_at(late) == datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def test_a_cards_mac_covers_its_days_count_and_older_macs_stay_valid():
    state = inquired(card())
    without = state_message(state, "0" * 64, {})
    counted = then(state, wrong(state), OPEN)
    message = state_message(counted, "0" * 64, {})
    assert b"\x1ec\x1e2026-06-01\x1e1" in message
    assert b"\x1ec\x1e" not in without
    reset = counted._replace(code_days={USER: CodeDay(OPEN.astimezone(TOKYO).date(), 0)})
    assert state_message(reset, "0" * 64, {}) != message  # a count edited in the row fails the card's MAC


@pytest.mark.parametrize(
    "outcome, failed",
    [
        (ProxyCompletion(ProxyResult.WRONG_CODE, 2), True),
        (ProxyCompletion(ProxyResult.VOIDED, 0), True),
        (ProxyCompletion(ProxyResult.COMPLETED, 0), False),
        (ProxyCompletion(ProxyResult.NO_OPEN_INQUIRY, 0), False),
        (ProxyCompletion(ProxyResult.EXPIRED, 0), False),
        (CheckOutcome(CheckResult.WRONG_PIN, 2, False, 3), True),
        (CheckOutcome(CheckResult.OK, 3, False, 3), False),
    ],
)
def test_a_wrong_proxy_code_is_a_failure_for_the_terminals_throttle(outcome, failed):
    assert throttle.is_failure(outcome) is failed


# -- configuration ([procedures] in the offices file) ----------------------------------------


def _offices(tmp_path, procedures: str):
    from pinlife.config.offices import load_policy

    f = tmp_path / "offices.toml"
    f.write_text(f"[procedures]\n{procedures}\n")
    return load_policy(f, ThrottlePolicy(), OPEN.date())


def test_the_bounds_are_configured_in_procedures(tmp_path):
    policy = _offices(tmp_path, "proxy_wrong_codes_per_day = 2\nsuspensions_per_window = 4\nsuspension_window_minutes = 15")
    assert (policy.proxy_wrong_codes_per_day, policy.suspensions_per_window) == (2, 4)
    assert policy.suspension_window == timedelta(minutes=15)
    assert _offices(tmp_path, "").suspensions_per_window == 30


@pytest.mark.parametrize(
    "line", ["suspensions_per_window = 0", "proxy_wrong_codes_per_day = -1", 'suspension_window_minutes = "x"']
)
def test_a_bound_is_a_whole_number_of_at_least_one(tmp_path, line):
    from pinlife.config.offices import OfficesConfigError

    with pytest.raises(OfficesConfigError, match=line.split(" ")[0]):
        _offices(tmp_path, line)
