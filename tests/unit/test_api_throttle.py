"""The terminal throttle through the servicers on the in-memory store
(tests/unit/direct.py): status misses count (enumeration by GetPinStatus),
the throttled terminal gets RESOURCE_EXHAUSTED with the time left, another
terminal does not, and after the penalty the window starts afresh; a
throttled terminal still gets its earlier answers replayed. Moved down from
tests/e2e/test_throttle_burst.py, which keeps the bursts: calls in flight
together on one instance and on two sharing a PostgreSQL store."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest

from pinlife.app.handlers import Caller
from pinlife.domain.policy import ThrottlePolicy
from pinlife.domain.streams import terminal_stream
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.clock import FakeClock
from tests.rpc import CALLS_AT, USER, retry_seconds
from tests.unit.direct import Service, as_given, policy

THROTTLED = grpc.StatusCode.RESOURCE_EXHAUSTED  # service/api/errors.py: Throttled
READER = Caller("medical_reader", "medical_reader-01")
COUNTER = Caller("ward_office", "ward_office-01", "naka-ward-office")
AUDITOR = Caller("auditor", "auditor-01")


def throttled_service(clock: FakeClock, max_distinct_cards: int, window_seconds: int = 600, penalty_seconds: int = 900):
    throttle = ThrottlePolicy(max_distinct_cards, timedelta(seconds=window_seconds), timedelta(seconds=penalty_seconds))
    return Service(clock, policy(clock, throttle), identify=as_given)


def code_of(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


def test_status_misses_throttle_a_terminal_enumerating_cards():
    clock = FakeClock(CALLS_AT)
    service = throttled_service(clock, max_distinct_cards=5, window_seconds=600, penalty_seconds=60)
    counter, auditor = service.client(caller=COUNTER), service.client(caller=AUDITOR)
    store = service.store
    try:
        counter.enroll("card-K1", {USER: "4821"})
        length = store.log.head_position()
        codes = [
            code_of(lambda i=i: auditor.pins.GetPinStatus(ppb.GetPinStatusRequest(card_id=f"ghost-{i:03d}"))) for i in range(200)
        ]
        assert codes == [grpc.StatusCode.NOT_FOUND] * 6 + [THROTTLED] * 194
        stream = store.log.stream(terminal_stream(AUDITOR.terminal_id))
        (throttled,) = [e for e in stream if e.event_type == "TerminalThrottled"]
        assert throttled.payload["distinct_cards"] == 6
        # an auditor's status reads are recorded (the six answered); refusals append nothing else
        assert sorted(e.event_type for e in stream) == ["AuditRead"] * 6 + ["TerminalThrottled"]
        assert store.log.head_position() == length + 7

        # Throttled: even an enrolled card's status is refused, with the time left.
        clock.advance(seconds=30)
        with pytest.raises(grpc.RpcError) as err:
            auditor.status("card-K1")
        assert err.value.code() == THROTTLED and retry_seconds(err.value) == 30
        clock.advance(seconds=29)
        with pytest.raises(grpc.RpcError) as err:
            auditor.status("card-K1")
        assert err.value.code() == THROTTLED and retry_seconds(err.value) == 1
        # Another terminal is not throttled.
        assert counter.status("card-K1").card_status == pb.CARD_STATUS_ACTIVE

        # Once the penalty has passed: answered again, and the window starts afresh.
        clock.advance(seconds=1)
        assert auditor.status("card-K1").card_status == pb.CARD_STATUS_ACTIVE
        for i in range(6):
            with pytest.raises(grpc.RpcError) as err:
                auditor.status(f"ghost-{i:03d}")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            auditor.status("card-K1")
        assert err.value.code() == THROTTLED
        throttles = [e for e in store.log.stream(terminal_stream(AUDITOR.terminal_id)) if e.event_type != "AuditRead"]
        assert [e.event_type for e in throttles] == ["TerminalThrottled"] * 2
    finally:
        service.close()


def test_a_throttled_terminal_gets_its_earlier_answers_replayed():
    service = throttled_service(FakeClock(CALLS_AT), max_distinct_cards=3)
    counter, reader = service.client(caller=COUNTER), service.client(caller=READER)
    try:
        cards = [f"card-Q{i}" for i in range(5)]
        for card in cards:
            counter.enroll(card, {USER: "4821"})
        ok_id, wrong_id = str(uuid.uuid4()), str(uuid.uuid4())
        ok = reader.verify(cards[0], USER, "4821", request_id=ok_id)
        wrong = reader.verify(cards[0], USER, "0000", request_id=wrong_id)
        assert ok.check.result == pb.CHECK_RESULT_OK and wrong.check.result == pb.CHECK_RESULT_WRONG_PIN
        for card in cards[1:4]:  # the 4th distinct card crosses the bound of 3
            assert reader.verify(card, USER, "0000").check.result == pb.CHECK_RESULT_WRONG_PIN
        with pytest.raises(grpc.RpcError) as err:
            reader.verify(cards[4], USER, "4821")
        assert err.value.code() == THROTTLED
        length = service.store.log.head_position()

        again_ok = reader.verify(cards[0], USER, "4821", request_id=ok_id)
        again_wrong = reader.verify(cards[0], USER, "0000", request_id=wrong_id)
        assert again_ok.replayed and again_ok.check == ok.check
        assert again_wrong.replayed and again_wrong.check == wrong.check
        assert service.store.log.head_position() == length  # replays append nothing
        with pytest.raises(grpc.RpcError) as err:  # a new request is still refused
            reader.verify(cards[0], USER, "4821")
        assert err.value.code() == THROTTLED
    finally:
        service.close()
