"""PinService and CounterService's enrolment through the servicers, on the
in-memory store (tests/unit/direct.py): enrolment, verification and its
count, change, malformed input and its field violations, replays and
request-id reuse, unknown cards and unset PIN types. Moved down from
tests/e2e/test_pin_service.py, which keeps one case of each path over a real
channel on each store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import pytest

from pinlife.v1 import common_pb2 as pb
from tests.clock import FakeClock
from tests.rpc import field_violations, precondition_violations
from tests.unit.direct import Service

USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGN = pb.PIN_TYPE_SIGNATURE
RESIDENT = pb.PIN_TYPE_RESIDENT_REGISTRY
CARD_INFO = pb.PIN_TYPE_CARD_INFO_INPUT_SUPPORT
ALL_PINS = {RESIDENT: "4821", CARD_INFO: "4821", USER: "4821", SIGN: "Kx73pq"}
T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Tokyo


@pytest.fixture
def service():
    s = Service(FakeClock(T0))
    yield s
    s.close()


@pytest.fixture
def client(service):
    return service.client("unit-terminal")


def enrolled(client, card="card-A1", pins=None):
    client.enroll(card, pins or ALL_PINS)
    return card


def pin_state(client, card, pin_type):
    (state,) = client.status(card, pin_type).pins
    return state


def test_enroll_then_status_shows_every_pin_fresh(client):
    resp = client.enroll("card-A1", ALL_PINS)
    assert resp.stream_version == 1 and not resp.replayed
    assert resp.card_id == "card-A1" and [p.pin_type for p in resp.pins] == [RESIDENT, CARD_INFO, USER, SIGN]
    status = client.status("card-A1")
    assert status.card_status == pb.CARD_STATUS_ACTIVE and status.stream_version == 1
    assert [(p.pin_type, p.status, p.remaining_tries, p.retry_limit) for p in status.pins] == [
        (RESIDENT, pb.PIN_STATUS_ACTIVE, 3, 3),
        (CARD_INFO, pb.PIN_STATUS_ACTIVE, 3, 3),
        (USER, pb.PIN_STATUS_ACTIVE, 3, 3),
        (SIGN, pb.PIN_STATUS_ACTIVE, 5, 5),
    ]


def test_verify_counts_down_flags_the_final_try_and_locks_at_the_limit(client, service):
    card = enrolled(client)
    first = client.verify(card, USER, "0000").check
    assert (first.result, first.remaining_tries, first.final_try) == (pb.CHECK_RESULT_WRONG_PIN, 2, False)
    second = client.verify(card, USER, "0000").check
    assert (second.result, second.remaining_tries, second.final_try) == (pb.CHECK_RESULT_WRONG_PIN, 1, True)
    third = client.verify(card, USER, "0000").check
    assert (third.result, third.remaining_tries, third.locked_now) == (pb.CHECK_RESULT_LOCKED, 0, True)
    assert third.recovery.route == pb.RECOVERY_ROUTE_COUNTER
    # A locked PIN is never checked: even the right PIN is answered "locked".
    after = client.verify(card, USER, "4821").check
    assert (after.result, after.locked_now) == (pb.CHECK_RESULT_LOCKED, False)
    state = pin_state(client, card, USER)
    assert state.status == pb.PIN_STATUS_LOCKED and state.consecutive_failures == 3
    assert state.HasField("locked_at")
    types = [e.event_type for e in service.store.log.stream(card)]
    assert types == ["CardEnrolled"] + ["PinVerificationFailed"] * 3 + ["PinLocked", "LockedPinAttempted"]


def test_correct_pin_resets_the_counter_and_pins_count_separately(client):
    card = enrolled(client)
    client.verify(card, USER, "1111")
    client.verify(card, USER, "1111")
    ok = client.verify(card, USER, "4821").check
    assert (ok.result, ok.remaining_tries) == (pb.CHECK_RESULT_OK, 3)
    # The same value on another 4-digit PIN counts separately.
    client.verify(card, RESIDENT, "1111")
    assert pin_state(client, card, USER).consecutive_failures == 0
    assert pin_state(client, card, RESIDENT).consecutive_failures == 1
    assert pin_state(client, card, CARD_INFO).consecutive_failures == 0


def test_signature_pin_is_case_insensitive_and_locks_after_five(client):
    card = enrolled(client)
    assert client.verify(card, SIGN, "KX73PQ").check.result == pb.CHECK_RESULT_OK
    results = [client.verify(card, SIGN, "WRONG1").check for _ in range(5)]
    assert [r.remaining_tries for r in results] == [4, 3, 2, 1, 0]
    assert results[-1].result == pb.CHECK_RESULT_LOCKED
    # The user-certificate PIN still works: the convenience store is a way out.
    assert results[-1].recovery.route == pb.RECOVERY_ROUTE_CONVENIENCE_STORE_OR_COUNTER


def test_malformed_pin_is_invalid_argument_and_costs_no_try(client, service):
    card = enrolled(client)
    before = service.store.log.head_position()
    for bad in ("123", "12345", "12a4", "１２３４", ""):
        with pytest.raises(grpc.RpcError) as err:
            client.verify(card, USER, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pin" in field_violations(err.value)
    with pytest.raises(grpc.RpcError) as err:
        client.verify(card, SIGN, "abcdef")  # no digit
    assert "pin" in field_violations(err.value)
    assert service.store.log.head_position() == before
    assert pin_state(client, card, USER).remaining_tries == 3


def test_status_costs_no_try_and_records_nothing(client, service):
    card = enrolled(client)
    before = service.store.log.head_position()
    for _ in range(5):
        client.status(card)
    assert service.store.log.head_position() == before


def test_change_with_known_pin_sets_the_new_one(client):
    card = enrolled(client)
    client.verify(card, USER, "0000")
    resp = client.change(card, USER, "4821", "7395")
    assert resp.changed and resp.check.result == pb.CHECK_RESULT_OK
    assert pin_state(client, card, USER).consecutive_failures == 0
    assert client.verify(card, USER, "4821").check.result == pb.CHECK_RESULT_WRONG_PIN
    assert client.verify(card, USER, "7395").check.result == pb.CHECK_RESULT_OK


def test_change_with_wrong_current_pin_costs_a_try(client):
    card = enrolled(client)
    resp = client.change(card, USER, "0000", "7395")
    assert not resp.changed
    assert (resp.check.result, resp.check.remaining_tries) == (pb.CHECK_RESULT_WRONG_PIN, 2)
    client.change(card, USER, "0000", "7395")
    locked = client.change(card, USER, "0000", "7395")
    assert locked.check.result == pb.CHECK_RESULT_LOCKED and not locked.changed
    assert client.verify(card, USER, "4821").check.result == pb.CHECK_RESULT_LOCKED


def test_change_with_malformed_new_pin_costs_nothing(client, service):
    card = enrolled(client)
    before = service.store.log.head_position()
    with pytest.raises(grpc.RpcError) as err:
        client.change(card, USER, "0000", "12")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {"new_pin"}
    assert service.store.log.head_position() == before


def test_retry_with_same_request_id_returns_first_answer_and_appends_nothing(client, service):
    card = enrolled(client)
    rid = str(uuid.uuid4())
    first = client.verify(card, USER, "0000", request_id=rid)
    position = service.store.log.head_position()
    again = client.verify(card, USER, "0000", request_id=rid)
    assert again.replayed and again.check == first.check
    assert service.store.log.head_position() == position
    assert pin_state(client, card, USER).consecutive_failures == 1
    # The same id for another request is refused, naming the field.
    with pytest.raises(grpc.RpcError) as err:
        client.verify(card, RESIDENT, "0000", request_id=rid)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in field_violations(err.value)


def test_enroll_retry_replays_and_second_enroll_is_already_exists(client):
    rid = str(uuid.uuid4())
    client.enroll("card-B2", ALL_PINS, request_id=rid)
    assert client.enroll("card-B2", ALL_PINS, request_id=rid).replayed
    with pytest.raises(grpc.RpcError) as err:
        client.enroll("card-B2", ALL_PINS)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_unknown_card_and_unset_pin_type(client):
    with pytest.raises(grpc.RpcError) as err:
        client.verify("no-such-card", USER, "1234")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.status("no-such-card")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    client.enroll("card-minor", {RESIDENT: "1234", USER: "1234"})  # no signature certificate
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-minor", SIGN, "ABC123")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [v.type for v in precondition_violations(err.value)] == ["PIN_NOT_SET"]


def test_bad_fields_are_reported_together(client):
    with pytest.raises(grpc.RpcError) as err:
        client.verify("bad card id", 99, "1234", request_id="short")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {"request_id", "card_id", "pin_type"}
    with pytest.raises(grpc.RpcError) as err:
        client.enroll("card-C3", {})
    assert "pins" in field_violations(err.value)
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-C3", pin_type=42)
    assert "pin_type" in field_violations(err.value)


def test_individual_number_as_card_id_is_refused(client):
    with pytest.raises(grpc.RpcError) as err:
        client.enroll("123456789018", ALL_PINS)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Individual Number" in field_violations(err.value)["card_id"]
