"""The app facade (service/app/service.py: PinLife), wired by make_app with
the in-memory store (tests/unit/fakes.py) and the thread writer, driven with
asyncio.run: the terminal throttle and the recording of refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from pinlife.app.handlers import Caller
from pinlife.app.service import PinLife
from pinlife.bootstrap.instance import make_app
from pinlife.domain.card_ids import looks_like_individual_number, my_number_check_digit
from pinlife.domain.errors import NotFound
from pinlife.domain.events import AccessDenied, TerminalThrottled
from pinlife.domain.outcomes import CheckResult
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.domain.streams import terminal_stream
from pinlife.domain.throttle import Throttled
from tests.clock import FakeClock
from tests.keys import ring
from tests.unit.fakes import FakeStore
from tests.unit.helpers import CORRECT, USER, WRONG, enroll, request_id, verify

T0 = datetime(2026, 4, 1, 1, 30, tzinfo=UTC)
KEYS = ring("k-1", {"k-1": b"k" * 32})
THROTTLE = ThrottlePolicy(max_distinct_cards=2, window=timedelta(minutes=10), penalty=timedelta(minutes=15))
COUNTER = Caller("ward_office", "terminal-counter-01", office="naka")
READER = Caller("medical_reader", "terminal-reader-01")
CARDS = ("card-a", "card-b", "card-c", "card-d")

FIRST11 = "12345678901"
MY_NUMBER = FIRST11 + str(my_number_check_digit(FIRST11))  # a 12-digit id with a valid check digit


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def drive(store: FakeStore, clock: FakeClock, scenario) -> None:
    """Run `scenario(app)` on a started PinLife (thread writer, fake store), with CARDS enrolled."""

    async def main() -> None:
        app = make_app(store, KEYS, clock, Policy(throttle=THROTTLE), writer="thread")
        await app.start()
        try:
            for card in CARDS:
                await app.execute(enroll(CORRECT, card), COUNTER)
            await scenario(app)
        finally:
            await app.stop()

    asyncio.run(main())


def terminal_events(store: FakeStore, caller: Caller) -> list:
    return [e.event for e in store.log.stream(terminal_stream(caller.terminal_id))]


async def fail_on(app: PinLife, card: str, caller: Caller = READER):
    answer = await app.execute(verify(USER, WRONG[USER], card), caller)
    assert answer.outcome.result is CheckResult.WRONG_PIN
    return answer


# -- throttling ---------------------------------------------------------------------


def test_given_failures_on_more_distinct_cards_than_allowed_then_the_terminal_is_throttled_and_it_is_recorded(store, clock):
    async def scenario(app: PinLife) -> None:
        await fail_on(app, "card-a")
        clock.advance(seconds=1)
        await fail_on(app, "card-b")
        clock.advance(seconds=1)
        await fail_on(app, "card-c")  # the third card: answered, then the terminal is throttled
        assert terminal_events(store, READER) == [
            TerminalThrottled(3, 600, (T0 + timedelta(seconds=2) + THROTTLE.penalty).isoformat())
        ]

        head = store.log.head_position()
        clock.advance(minutes=14)
        with pytest.raises(Throttled) as refused:
            await app.execute(verify(USER, CORRECT[USER], "card-d"), READER)
        assert refused.value.retry_after == timedelta(minutes=1)
        assert store.log.head_position() == head  # a throttled command is not written
        # only that terminal: another one still verifies
        assert (await app.execute(verify(USER, CORRECT[USER], "card-d"), COUNTER)).outcome.result is CheckResult.OK
        # and after the penalty the terminal is served again
        clock.advance(minutes=2)
        assert (await app.execute(verify(USER, CORRECT[USER], "card-d"), READER)).outcome.result is CheckResult.OK

    drive(store, clock, scenario)
    stream = store.log.stream(terminal_stream(READER.terminal_id))
    assert [(e.version, e.envelope.terminal_id, e.envelope.channel) for e in stream] == [
        (1, READER.terminal_id, "medical_reader")
    ]


def test_given_many_failures_on_few_cards_then_the_terminal_is_not_throttled(store, clock):
    async def scenario(app: PinLife) -> None:
        for _ in range(2):
            await fail_on(app, "card-a")
            await fail_on(app, "card-b")
        assert (await app.execute(verify(USER, CORRECT[USER], "card-a"), READER)).outcome.result is CheckResult.OK

    drive(store, clock, scenario)
    assert terminal_events(store, READER) == []


def test_given_attempts_on_unknown_cards_then_they_count_as_failures(store, clock):
    async def scenario(app: PinLife) -> None:
        for card in ("card-x", "card-y", "card-z"):
            with pytest.raises(NotFound):
                await app.execute(verify(USER, CORRECT[USER], card), READER)
        with pytest.raises(Throttled):
            await app.execute(verify(USER, CORRECT[USER], "card-a"), READER)

    drive(store, clock, scenario)
    assert [type(e) for e in terminal_events(store, READER)] == [TerminalThrottled]
    assert [e.distinct_cards for e in terminal_events(store, READER)] == [3]


def test_given_replayed_answers_then_they_are_not_counted_again(store, clock):
    async def scenario(app: PinLife) -> None:
        wrong_c = verify(USER, WRONG[USER], "card-c")
        assert (await app.execute(wrong_c, READER)).outcome.result is CheckResult.WRONG_PIN
        clock.advance(minutes=11)  # card-c's failure has left the window
        await fail_on(app, "card-a")
        await fail_on(app, "card-b")
        for _ in range(3):  # retries of card-c's request: were they counted, card-c would be a third card
            replayed = await app.execute(wrong_c, READER)
            assert replayed.replayed and replayed.outcome.result is CheckResult.WRONG_PIN
        assert (await app.execute(verify(USER, CORRECT[USER], "card-a"), READER)).outcome.result is CheckResult.OK

    drive(store, clock, scenario)
    assert terminal_events(store, READER) == []
    assert store.cards.read_card("card-c").pins[USER].consecutive_failures == 1


# -- refusals -----------------------------------------------------------------------


def test_given_a_burst_of_refusals_then_one_event_per_window_records_how_many(store, clock):
    async def scenario(app: PinLife) -> None:
        for _ in range(500):
            await app.record_refusal(READER, ENROLL_RPC, request_id(), "card-a")
        assert len(store.log.stream(terminal_stream(READER.terminal_id))) == 1
        clock.advance(minutes=10)
        await app.record_refusal(READER, ENROLL_RPC, request_id(), "card-a")
        await app.record_refusal(COUNTER, ENROLL_RPC, request_id(), "card-a")  # another terminal: its own window

    drive(store, clock, scenario)
    assert [e.event.repeated for e in store.log.stream(terminal_stream(READER.terminal_id))] == [0, 499]
    assert [e.event.repeated for e in store.log.stream(terminal_stream(COUNTER.terminal_id))] == [0]


ENROLL_RPC = "/pinlife.v1.CounterService/EnrollCard"


def test_given_a_refusal_then_it_is_recorded_as_access_denied_on_the_terminal_stream(store, clock):
    async def scenario(app: PinLife) -> None:
        await app.record_refusal(READER, ENROLL_RPC, "req-refused-0001", "card-a")

    drive(store, clock, scenario)
    stream = store.log.stream(terminal_stream(READER.terminal_id))
    assert [e.event for e in stream] == [AccessDenied(ENROLL_RPC, "medical_reader", "card-a")]
    assert [(e.version, e.envelope.request_id, e.envelope.channel) for e in stream] == [(1, "req-refused-0001", "medical_reader")]
    assert [e.event_type for e in store.log.stream("card-a")] == ["CardEnrolled"]  # nothing on the card


def test_given_a_refusal_naming_an_individual_number_then_the_number_is_never_recorded(store, clock):
    assert looks_like_individual_number(MY_NUMBER)
    not_my_number = FIRST11 + str((int(MY_NUMBER[-1]) + 1) % 10)  # 12 digits, wrong check digit: an opaque id
    assert not looks_like_individual_number(not_my_number)

    async def scenario(app: PinLife) -> None:
        await app.record_refusal(READER, ENROLL_RPC, request_id(), MY_NUMBER)
        clock.advance(minutes=10)  # refusals within a window are aggregated: one window each
        await app.record_refusal(READER, ENROLL_RPC, "bad id", "card/../x")  # malformed: neither is kept
        clock.advance(minutes=10)
        await app.record_refusal(READER, ENROLL_RPC, request_id(), not_my_number)

    drive(store, clock, scenario)
    stream = store.log.stream(terminal_stream(READER.terminal_id))
    assert [e.event.card_id for e in stream] == ["", "", not_my_number]
    assert stream[1].envelope.request_id == "-"
    assert MY_NUMBER not in repr((store.events, store.states, store.requests, store.secrets))
