"""Issue 22, items 5 and 6, through the command handlers and the batch
transaction (service/app/handlers.py) against the in-memory store
(tests/unit/fakes.py): the terminal's suspensions are kept with its window
from batch to batch, a refusal is recorded on its stream and suspends
nothing; wrong proxy codes count as failures for the terminal's throttle,
and a card's daily bound holds across re-issued inquiries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from pinlife.api.errors import code_for, to_status
from pinlife.app.answers import Answer
from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.domain.commands import CompleteProxyReset, RequestProxyReset, SuspendCard
from pinlife.domain.documents import DocumentType as T
from pinlife.domain.errors import LimitReached
from pinlife.domain.outcomes import ProxyResult
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.domain.streams import terminal_stream
from pinlife.domain.throttle import Throttled
from tests.clock import FakeClock
from tests.keys import ring
from tests.unit.fakes import FakeStore
from tests.unit.helpers import CORRECT, USER, enroll, request_id

T0 = datetime(2026, 6, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
KEYS = ring("k-1", {"k-1": b"k" * 32})
CALL_CENTRE = Caller("call_center", "terminal-call-01")
OTHER_CALL_CENTRE = Caller("call_center", "terminal-call-02")
COUNTER = Caller("ward_office", "terminal-counter-01")  # no office: not gated (development-style), still bounded
ENROLLER = Caller("development", "terminal-enrol")
INQUIRY_DOCS = [(T.MY_NUMBER_CARD, ""), (T.OTHER_ID, "")]
COMPLETION_DOCS = [(T.MY_NUMBER_CARD, ""), (T.INQUIRY_FORM, ""), (T.POWER_OF_ATTORNEY, ""), (T.PUBLIC_PHOTO_ID, "")]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def runner_with(store, clock, **policy) -> ThreadRunner:
    return ThreadRunner(store, KEYS, clock, Policy(**policy))


def one(runner: ThreadRunner, command, caller: Caller):
    return runner.process([(command, caller)])[0]


def enrol(runner, *card_ids):
    for card_id in card_ids:
        assert isinstance(one(runner, enroll(CORRECT, card_id), ENROLLER), Answer)


def suspend(card_id):
    return SuspendCard.create(request_id(), card_id, "lost", None)


def types(store, caller):
    return [e.event_type for e in store.log.stream(terminal_stream(caller.terminal_id))]


def test_a_terminals_suspensions_are_bounded_per_window_across_batches(store, clock):
    runner = runner_with(store, clock, suspensions_per_window=2)
    enrol(runner, "card-a", "card-b", "card-c", "card-d")
    assert isinstance(one(runner, suspend("card-a"), CALL_CENTRE), Answer)
    clock.advance(timedelta(minutes=20))
    assert isinstance(one(runner, suspend("card-b"), CALL_CENTRE), Answer)
    refused = one(runner, suspend("card-c"), CALL_CENTRE)
    assert isinstance(refused, LimitReached) and refused.retry_after == timedelta(minutes=40)
    assert code_for(refused) is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = {d.type_url.rsplit(".", 1)[-1] for d in to_status(refused).details}
    assert details == {"QuotaFailure", "RetryInfo"}
    assert not store.states["card-c"].suspended and [e.event_type for e in store.log.stream("card-c")] == ["CardEnrolled"]
    assert types(store, CALL_CENTRE) == ["SuspensionRefused"]
    (event,) = [e.event for e in store.log.stream(terminal_stream(CALL_CENTRE.terminal_id))]
    assert (event.card_id, event.suspensions, event.window_seconds) == ("card-c", 2, 3600)
    # another terminal has its own bound; a counter is bounded the same way
    assert isinstance(one(runner, suspend("card-c"), OTHER_CALL_CENTRE), Answer)
    # the oldest suspension leaves the window: one more
    clock.advance(timedelta(minutes=40))
    assert isinstance(one(runner, suspend("card-d"), CALL_CENTRE), Answer)
    assert store.windows[CALL_CENTRE.terminal_id].suspensions == (T0 + timedelta(minutes=20), T0 + timedelta(minutes=60))


def test_several_suspensions_in_one_batch_share_the_terminals_bound(store, clock):
    runner = runner_with(store, clock, suspensions_per_window=2)
    enrol(runner, "card-a", "card-b", "card-c")
    results = runner.process([(suspend(c), COUNTER) for c in ("card-a", "card-b", "card-c")])
    assert [type(r) for r in results] == [Answer, Answer, LimitReached]


def test_an_already_suspended_card_costs_nothing_of_the_bound(store, clock):
    runner = runner_with(store, clock, suspensions_per_window=1)
    enrol(runner, "card-a", "card-b")
    one(runner, suspend("card-a"), OTHER_CALL_CENTRE)
    assert isinstance(one(runner, suspend("card-a"), CALL_CENTRE), Answer)  # already suspended: nothing happens
    assert isinstance(one(runner, suspend("card-b"), CALL_CENTRE), Answer)


def request(card_id):
    return RequestProxyReset.create(request_id(), card_id, USER, INQUIRY_DOCS, None)


def complete(card_id, inquiry_id, code="00000000"):
    return CompleteProxyReset.create(request_id(), card_id, USER, inquiry_id, code, "5678", COMPLETION_DOCS, None)


def test_wrong_proxy_codes_are_failures_on_the_card_for_the_terminals_throttle(store, clock):
    runner = runner_with(store, clock, throttle=ThrottlePolicy(max_distinct_cards=1))
    enrol(runner, "card-a", "card-b")
    for card_id in ("card-a", "card-b"):
        issued = one(runner, request(card_id), COUNTER)
        result = one(runner, complete(card_id, issued.outcome.inquiry_id), COUNTER)
        assert result.outcome.result is ProxyResult.WRONG_CODE
    assert types(store, COUNTER) == ["TerminalThrottled"]
    assert isinstance(one(runner, request("card-a"), COUNTER), Throttled)


def test_the_voiding_wrong_code_is_a_failure_too(store, clock):
    runner = runner_with(store, clock, inquiry_max_wrong_codes=1, throttle=ThrottlePolicy(max_distinct_cards=1))
    enrol(runner, "card-a", "card-b")
    for card_id in ("card-a", "card-b"):
        issued = one(runner, request(card_id), COUNTER)
        assert one(runner, complete(card_id, issued.outcome.inquiry_id), COUNTER).outcome.result is ProxyResult.VOIDED
    assert types(store, COUNTER) == ["TerminalThrottled"]


def test_a_cards_daily_bound_holds_across_reissued_inquiries_and_terminals(store, clock):
    runner = runner_with(store, clock, proxy_wrong_codes_per_day=4)
    enrol(runner, "card-a")
    results = []
    for counter in (COUNTER, Caller("ward_office", "terminal-counter-02")):  # re-issued, at another counter too
        issued = one(runner, request("card-a"), counter)
        for _ in range(3):
            results.append(one(runner, complete("card-a", issued.outcome.inquiry_id), counter))
    kinds = [r.outcome.result if isinstance(r, Answer) else type(r) for r in results]
    first, second = kinds[:3], kinds[3:]
    assert first == [ProxyResult.WRONG_CODE, ProxyResult.WRONG_CODE, ProxyResult.VOIDED]
    assert second == [ProxyResult.WRONG_CODE, LimitReached, LimitReached]
    refusal = results[4]
    assert refusal.retry_after == datetime(2026, 6, 2, 0, 0, tzinfo=UTC) - timedelta(hours=9) - T0
    stream = [e.event_type for e in store.log.stream("card-a")]
    assert stream.count("ProxyInquiryCodeRejected") == 4 and stream[-1] == "ResetRefused"
    assert stream.count("ResetRefused") == 1  # the second, the same refusal within its window, is counted (repeats.py)
    assert store.states["card-a"].code_days[USER].wrong_codes == 4
