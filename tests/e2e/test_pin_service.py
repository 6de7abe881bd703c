"""End to end over a real gRPC channel, on SQLite and PostgreSQL: one case
of each path, to show the real channel and stores carry it (answers, a
replay, an error with its details for each kind of detail, the log after a
session), and what only a real server has (health, reflection, the message
size limit: on SQLite, as they come before any store).

The rules themselves (counting, locking, change, validation and its field
violations, replays and request-id reuse, enrolment) are tested through the
servicers on the in-memory store: tests/unit/test_api_pins.py."""

from __future__ import annotations

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pinlife.v1 import common_pb2 as pb
from tests.keys import INTEGRITY
from tests.rpc import field_violations
from tests.unit.test_api_pins import (  # the same checks, collected here too: over a real channel, on each store
    enrolled,
    pin_state,
    test_bad_fields_are_reported_together,  # noqa: F401
    test_unknown_card_and_unset_pin_type,  # noqa: F401
)

USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGN = pb.PIN_TYPE_SIGNATURE
RESIDENT = pb.PIN_TYPE_RESIDENT_REGISTRY
CARD_INFO = pb.PIN_TYPE_CARD_INFO_INPUT_SUPPORT
ALL_PINS = {RESIDENT: "4821", CARD_INFO: "4821", USER: "4821", SIGN: "Kx73pq"}


def test_verify_counts_down_flags_the_final_try_and_locks_at_the_limit(client, server):
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
    types = [e.event_type for e in server.store.log.stream(card)]
    assert types == ["CardEnrolled"] + ["PinVerificationFailed"] * 3 + ["PinLocked", "LockedPinAttempted"]


def test_retry_with_same_request_id_returns_first_answer_and_appends_nothing(client, server):
    card = enrolled(client)
    rid = str(uuid.uuid4())
    first = client.verify(card, USER, "0000", request_id=rid)
    position = server.store.log.head_position()
    again = client.verify(card, USER, "0000", request_id=rid)
    assert again.replayed and again.check == first.check
    assert server.store.log.head_position() == position
    assert pin_state(client, card, USER).consecutive_failures == 1
    # The same id for another request is refused, naming the field.
    with pytest.raises(grpc.RpcError) as err:
        client.verify(card, RESIDENT, "0000", request_id=rid)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in field_violations(err.value)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_health_and_reflection(client, server):
    assert client.serving()
    for name in ("pinlife.v1.PinService", "pinlife.v1.CounterService"):
        resp = client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"pinlife.v1.PinService", "pinlife.v1.CounterService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("backend", ["sqlite"])
def test_oversized_request_is_refused_and_server_stays_up(client):
    card = enrolled(client)
    with pytest.raises(grpc.RpcError) as err:
        client.verify(card, USER, "1" * 200_000)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.verify(card, USER, "4821").check.result == pb.CHECK_RESULT_OK


def test_projection_equals_rebuild_and_chain_verifies_after_a_session(client, server):
    card = enrolled(client)
    for pin in ("0000", "4821", "0000", "0000", "0000", "4821"):
        client.verify(card, USER, pin)
    client.change(card, SIGN, "kx73pq", "NEW123")
    assert server.store.cards.projection() == server.store.cards.rebuild()
    assert server.store.integrity.first_broken_link(INTEGRITY) is None
