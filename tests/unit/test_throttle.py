"""Terminal throttling: failures on many distinct cards within a window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from service.domain.decide import CheckOutcome, CheckResult, Enrolled
from service.domain.pins import PinType
from service.domain.policy import ThrottlePolicy
from service.domain.throttle import FailureTracker, Throttled, is_failure

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
POLICY = ThrottlePolicy(max_distinct_cards=3, window=timedelta(minutes=10), penalty=timedelta(minutes=15))


def fail_on(tracker, cards, at=T0, terminal="reader-1"):
    return [tracker.record_failure(terminal, card, at) for card in cards]


def test_failures_on_few_cards_never_throttle():
    tracker = FailureTracker(POLICY)
    assert fail_on(tracker, ["a", "b", "c", "a", "b", "c", "a"]) == [None] * 7
    tracker.check("reader-1", T0)  # does not raise


def test_more_distinct_cards_than_allowed_throttle_once_for_the_penalty():
    tracker = FailureTracker(POLICY)
    assert fail_on(tracker, ["a", "b", "c", "d"]) == [None, None, None, 4]
    with pytest.raises(Throttled) as err:
        tracker.check("reader-1", T0 + timedelta(minutes=1))
    assert err.value.retry_after == timedelta(minutes=14)
    tracker.check("reader-2", T0)  # another terminal is not affected
    tracker.check("reader-1", T0 + timedelta(minutes=15))  # penalty over


def test_failures_older_than_the_window_do_not_count():
    tracker = FailureTracker(POLICY)
    fail_on(tracker, ["a", "b", "c"], at=T0)
    assert fail_on(tracker, ["d"], at=T0 + timedelta(minutes=10)) == [None]
    tracker.check("reader-1", T0 + timedelta(minutes=10))


def test_what_counts_as_a_failure():
    def outcome(result):
        return CheckOutcome(result, 0, False, 3)

    assert is_failure(outcome(CheckResult.WRONG_PIN)) and is_failure(outcome(CheckResult.LOCKED))
    assert not is_failure(outcome(CheckResult.OK))
    assert not is_failure(Enrolled("card-1", (PinType.USER_CERTIFICATE,)))
