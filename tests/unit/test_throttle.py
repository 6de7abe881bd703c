"""Terminal throttling: failures on many distinct cards within a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pinlife.domain.outcomes import CheckOutcome, CheckResult, Enrolled
from pinlife.domain.pins import PinType
from pinlife.domain.policy import ThrottlePolicy
from pinlife.domain.throttle import TerminalWindow, Throttled, check, is_failure, record_failure

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
POLICY = ThrottlePolicy(max_distinct_cards=3, window=timedelta(minutes=10), penalty=timedelta(minutes=15))


def fail_on(window, cards, at=T0):
    started = []
    for card in cards:
        window, distinct = record_failure(window, card, at, POLICY)
        started.append(distinct)
    return window, started


def test_failures_on_few_cards_never_throttle():
    window, started = fail_on(TerminalWindow(), ["a", "b", "c", "a", "b", "c", "a"])
    assert started == [None] * 7
    check(window, "reader-1", T0)  # does not raise
    assert len(window.last_failure) == 3  # one entry per distinct card, however many failures


def test_more_distinct_cards_than_allowed_throttle_once_for_the_penalty():
    window, started = fail_on(TerminalWindow(), ["a", "b", "c", "d"])
    assert started == [None, None, None, 4]
    with pytest.raises(Throttled) as err:
        check(window, "reader-1", T0 + timedelta(minutes=1))
    assert err.value.retry_after == timedelta(minutes=14)
    check(window, "reader-1", T0 + timedelta(minutes=15))  # penalty over
    check(TerminalWindow(), "reader-2", T0)  # another terminal's window is its own


def test_failures_older_than_the_window_do_not_count():
    window, _ = fail_on(TerminalWindow(), ["a", "b", "c"], at=T0)
    window, started = fail_on(window, ["d"], at=T0 + timedelta(minutes=10))
    assert started == [None]
    check(window, "reader-1", T0 + timedelta(minutes=10))
    assert set(window.last_failure) == {"d"}  # the old ones are pruned


def test_a_throttled_window_survives_a_round_trip_through_the_exception_pickle():
    import pickle

    err = pickle.loads(pickle.dumps(Throttled("reader-1", timedelta(seconds=30))))
    assert (err.terminal_id, err.retry_after) == ("reader-1", timedelta(seconds=30))


def test_what_counts_as_a_failure():
    def outcome(result):
        return CheckOutcome(result, 0, False, 3)

    assert is_failure(outcome(CheckResult.WRONG_PIN)) and is_failure(outcome(CheckResult.LOCKED))
    assert not is_failure(outcome(CheckResult.OK))
    assert not is_failure(Enrolled("card-1", (PinType.USER_CERTIFICATE,)))
