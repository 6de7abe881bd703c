"""Hostile input over a real channel (hypothesis): raw garbage bytes, and
random messages with oversized fields, on each store. Each gets a clean
canonical answer or error, never UNKNOWN or INTERNAL; the server stays up
and the event log stays valid. And a request whose errors would have made
trailers over a client's metadata limit (on SQLite: no store is reached).

The rules of the same input (random fields at the servicers, many more
examples; one message for an unknown PIN type on every RPC; bounded
violations) are tested through the servicers on the in-memory store:
tests/unit/test_api_input.py."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.keys import INTEGRITY
from tests.unit.test_api_input import (  # the same check, collected here too: over a real channel, on each store
    test_thousands_of_bad_pins_get_one_readable_violation,  # noqa: F401
)

CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=20),  # control characters
    st.sampled_from(["", "card-H1", "1234", "ABC123", "１２３４", "123456789018", "card-H1\x00", "ﬁ1234"]),
    st.builds(lambda n, c: c * n, st.integers(1000, 70_000), st.sampled_from(["x", "1", "é"])),  # oversized
)
pin_types = st.one_of(st.sampled_from(list(pb.PinType.values())), st.integers(-(2**31), 2**31 - 1))
request_ids = st.one_of(st.just(""), texts, st.uuids().map(str))

verify = st.builds(ppb.VerifyPinRequest, request_id=request_ids, card_id=texts, pin_type=pin_types, pin=texts)
change = st.builds(
    ppb.ChangePinRequest, request_id=request_ids, card_id=texts, pin_type=pin_types, current_pin=texts, new_pin=texts
)
status = st.builds(ppb.GetPinStatusRequest, card_id=texts, pin_type=pin_types)
enroll = st.builds(
    cpb.EnrollCardRequest,
    request_id=request_ids,
    card_id=texts,
    pins=st.lists(st.builds(cpb.InitialPin, pin_type=pin_types, pin=texts), max_size=6),
)

METHODS = {
    "/pinlife.v1.PinService/VerifyPin": verify,
    "/pinlife.v1.PinService/ChangePin": change,
    "/pinlife.v1.PinService/GetPinStatus": status,
    "/pinlife.v1.CounterService/EnrollCard": enroll,
}


def raw_call(client, method: str, payload: bytes) -> grpc.StatusCode:
    call = client.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(payload, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        assert "Traceback" not in (err.details() or "")
        return err.code()


@pytest.fixture
def hostile(client):
    client.enroll("card-H1", {pb.PIN_TYPE_USER_CERTIFICATE: "1234", pb.PIN_TYPE_SIGNATURE: "ABC123"})
    return client


def test_random_messages_and_garbage_get_clean_answers_and_leave_a_valid_log(hostile, server):
    @HYPOTHESIS
    @given(data=st.data())
    def messages(data):
        method = data.draw(st.sampled_from(sorted(METHODS)))
        code = raw_call(hostile, method, data.draw(METHODS[method]).SerializeToString())
        assert code in CLEAN, (method, code)

    @HYPOTHESIS
    @given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=300))
    def garbage(method, payload):
        code = raw_call(hostile, method, payload)
        assert code in CLEAN, (method, code)

    messages()
    garbage()
    assert hostile.serving()
    assert hostile.verify("card-H1", pb.PIN_TYPE_USER_CERTIFICATE, "1234").check.result == pb.CHECK_RESULT_OK
    assert server.store.integrity.first_broken_link(INTEGRITY) is None
    assert server.store.cards.projection() == server.store.cards.rebuild()


# --- bounded repeated fields and bounded errors ------------------------------
