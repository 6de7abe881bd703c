"""Hostile input at the API's servicers on the in-memory store
(tests/unit/direct.py): random fields (hypothesis: unknown enum values,
unicode and control characters, oversized values, missing request ids) get
a clean canonical answer or error, never UNKNOWN or INTERNAL; an unknown
PIN type is one message on every RPC; a request's errors are bounded (one
violation for too many PINs or documents, at most twenty then how many
more). Moved down from tests/e2e/test_hostile_input.py, which keeps what
only a real channel has: undecodable bytes, the message size limit and the
size of the error trailers, and random messages on each store's log."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from pinlife.v1 import store_service_pb2 as spb
from tests.clock import FakeClock
from tests.rpc import CALLS_AT, field_violations
from tests.unit.direct import Service

CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
HYPOTHESIS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
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

METHODS = {  # RPC: (servicer, method, its requests)
    "/pinlife.v1.PinService/VerifyPin": ("pins", "VerifyPin", verify),
    "/pinlife.v1.PinService/ChangePin": ("pins", "ChangePin", change),
    "/pinlife.v1.PinService/GetPinStatus": ("pins", "GetPinStatus", status),
    "/pinlife.v1.CounterService/EnrollCard": ("counter", "EnrollCard", enroll),
}


@pytest.fixture
def service():
    s = Service(FakeClock(CALLS_AT))
    yield s
    s.close()


@pytest.fixture
def hostile(service):
    client = service.client("unit-terminal")
    client.enroll("card-H1", {pb.PIN_TYPE_USER_CERTIFICATE: "1234", pb.PIN_TYPE_SIGNATURE: "ABC123"})
    return client


def call_code(service, rpc: str, request) -> grpc.StatusCode:
    servicer, method, _ = METHODS[rpc]
    try:
        service.call(getattr(service.servicers[servicer], method), request)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        assert "Traceback" not in (err.details() or "")
        return err.code()


def test_random_messages_get_clean_answers(hostile, service):
    @HYPOTHESIS
    @given(data=st.data())
    def messages(data):
        rpc = data.draw(st.sampled_from(sorted(METHODS)))
        code = call_code(service, rpc, data.draw(METHODS[rpc][2]))
        assert code in CLEAN, (rpc, code)

    messages()
    assert hostile.verify("card-H1", pb.PIN_TYPE_USER_CERTIFICATE, "1234").check.result == pb.CHECK_RESULT_OK


def _pin_type_calls(pin_type: int):
    """Each RPC taking a PIN type, with it set to `pin_type` and the rest well formed."""
    rid, card = "req-00000001", "card-H1"
    docs = [pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)]
    return {
        "VerifyPin": (
            "pin_type",
            lambda c: c.pins.VerifyPin(
                ppb.VerifyPinRequest(request_id=rid, card_id=card, pin_type=pin_type, pin="1234"), metadata=c.metadata
            ),
        ),
        "ChangePin": (
            "pin_type",
            lambda c: c.pins.ChangePin(
                ppb.ChangePinRequest(request_id=rid, card_id=card, pin_type=pin_type, current_pin="1234", new_pin="5678"),
                metadata=c.metadata,
            ),
        ),
        "GetPinStatus": (
            "pin_type",
            lambda c: c.pins.GetPinStatus(ppb.GetPinStatusRequest(card_id=card, pin_type=pin_type), metadata=c.metadata),
        ),
        "ReserveStoreReset": (
            "pin_type",
            lambda c: c.pins.ReserveStoreReset(
                ppb.ReserveStoreResetRequest(request_id=rid, card_id=card, pin_type=pin_type, proving_pin="1234"),
                metadata=c.metadata,
            ),
        ),
        "EnrollCard": (
            "pins[0].pin_type",
            lambda c: c.counter.EnrollCard(
                cpb.EnrollCardRequest(request_id=rid, card_id="card-H2", pins=[cpb.InitialPin(pin_type=pin_type, pin="1234")]),
                metadata=c.metadata,
            ),
        ),
        "ResetPin": (
            "pin_type",
            lambda c: c.counter.ResetPin(
                cpb.ResetPinRequest(
                    request_id=rid, card_id=card, pin_type=pin_type, new_pin="1234", applicant=pb.APPLICANT_HOLDER, documents=docs
                ),
                metadata=c.metadata,
            ),
        ),
        "UnlockPin": (
            "pin_type",
            lambda c: c.counter.UnlockPin(
                cpb.UnlockPinRequest(
                    request_id=rid, card_id=card, pin_type=pin_type, applicant=pb.APPLICANT_HOLDER, documents=docs
                ),
                metadata=c.metadata,
            ),
        ),
        "RequestProxyReset": (
            "pin_type",
            lambda c: c.counter.RequestProxyReset(
                cpb.RequestProxyResetRequest(request_id=rid, card_id=card, pin_type=pin_type, documents=docs), metadata=c.metadata
            ),
        ),
        "CompleteProxyReset": (
            "pin_type",
            lambda c: c.counter.CompleteProxyReset(
                cpb.CompleteProxyResetRequest(
                    request_id=rid,
                    card_id=card,
                    pin_type=pin_type,
                    inquiry_id="inquiry-0001",
                    code="12345678",
                    new_pin="1234",
                    documents=docs,
                ),
                metadata=c.metadata,
            ),
        ),
        "ConvenienceStoreService.ResetPin": (
            "pin_type",
            lambda c: c.store.ResetPin(
                spb.StoreResetPinRequest(request_id=rid, card_id=card, pin_type=pin_type, proving_pin="1234", new_pin="1234"),
                metadata=c.metadata,
            ),
        ),
    }


def test_an_unknown_pin_type_gets_one_message_on_every_rpc(hostile):
    """99 is "not a known PIN type (99)" everywhere (it was "is required" on
    some RPCs and "unknown" on GetPinStatus); 0 is "is required" wherever a
    PIN type is required (GetPinStatus: 0 means all of them)."""
    descriptions = {}
    for value in (99, -7):
        for rpc, (field, call) in _pin_type_calls(value).items():
            with pytest.raises(grpc.RpcError) as err:
                call(hostile)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
            descriptions[(rpc, value)] = field_violations(err.value)[field]
        assert {d for (_, v), d in descriptions.items() if v == value} == {
            f"is not a known PIN type ({value}): one of the four PIN types"
        }
    for rpc, (field, call) in _pin_type_calls(pb.PIN_TYPE_UNSPECIFIED).items():
        if rpc == "GetPinStatus":
            assert len(call(hostile).pins) == 2
            continue
        with pytest.raises(grpc.RpcError) as err:
            call(hostile)
        assert field_violations(err.value)[field] == "is required: one of the four PIN types", rpc


def _bad_request(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None, "the error carries its google.rpc.Status"
    out = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def test_thousands_of_bad_pins_get_one_readable_violation(hostile):
    """3,000 bad PINs in a 12 KB request: INVALID_ARGUMENT with one violation
    on `pins` naming the limit (it was one violation per PIN: 268 KB of
    trailers, over the client's metadata limit)."""
    request = cpb.EnrollCardRequest(
        request_id="req-00000001",
        card_id="card-H3",
        pins=[cpb.InitialPin(pin_type=pb.PIN_TYPE_USER_CERTIFICATE, pin="x") for _ in range(3000)],
    )
    assert request.ByteSize() < 64 * 1024
    with pytest.raises(grpc.RpcError) as err:
        hostile.counter.EnrollCard(request, timeout=10, metadata=hostile.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(err.value) == [("pins", "at most 4 PINs: one of each PIN type")]
    assert len(err.value.details()) < 200
    # four PINs are still taken one by one
    with pytest.raises(grpc.RpcError) as err:
        hostile.counter.EnrollCard(
            cpb.EnrollCardRequest(request_id="req-00000001", card_id="card-H3", pins=request.pins[:4]),
            timeout=10,
            metadata=hostile.metadata,
        )
    assert [f for f, _ in _bad_request(err.value)] == ["pins[0].pin", "pins[1].pin_type", "pins[2].pin_type", "pins[3].pin_type"]


def test_too_many_documents_get_one_violation(hostile):
    docs = [pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD, issued_on="yesterday") for _ in range(2000)]
    with pytest.raises(grpc.RpcError) as err:
        hostile.counter.ResetPin(
            cpb.ResetPinRequest(
                request_id="req-00000001",
                card_id="card-H1",
                pin_type=pb.PIN_TYPE_USER_CERTIFICATE,
                new_pin="1234",
                applicant=pb.APPLICANT_HOLDER,
                documents=docs,
            ),
            timeout=10,
            metadata=hostile.metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(err.value) == [("documents", "at most 16 documents")]


def test_an_error_reports_at_most_twenty_field_violations_then_how_many_more(hostile):
    """Five bad fields and sixteen bad documents: twenty violations, then
    "and 1 more", in the details and in the message alike."""
    docs = [pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD, issued_on="yesterday") for _ in range(16)]
    with pytest.raises(grpc.RpcError) as err:
        hostile.counter.ResetPin(
            cpb.ResetPinRequest(request_id="short", card_id="bad id", documents=docs), timeout=10, metadata=hostile.metadata
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _bad_request(err.value)
    assert len(violations) == 21 and violations[-1] == ("request", "and 1 more")
    assert err.value.details().endswith("request: and 1 more")
