"""What a test client of the API does on either layer: the calls with their
requests built (Calls: over a real channel in tests/e2e/harness.py, straight
into the servicers in tests/unit/direct.py), and the rich error details an
error carries (google.rpc.Status in its trailing metadata)."""

from __future__ import annotations

import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb


class Calls:
    """The common calls, on a client with stubs `pins` and `counter` (as
    generated: stub.Method(request, timeout=..., metadata=...)) and the
    `metadata` its calls carry (the development headers)."""

    pins: object
    counter: object
    metadata: list[tuple[str, str]]

    def enroll(self, card_id: str, pins: dict[int, str], request_id: str | None = None) -> cpb.EnrollCardResponse:
        req = cpb.EnrollCardRequest(
            request_id=request_id or str(uuid.uuid4()),
            card_id=card_id,
            pins=[cpb.InitialPin(pin_type=t, pin=p) for t, p in pins.items()],
        )
        return self.counter.EnrollCard(req, timeout=10, metadata=self.metadata)

    def verify(self, card_id: str, pin_type: int, pin: str, request_id: str | None = None, timeout: float = 10):
        req = ppb.VerifyPinRequest(request_id=request_id or str(uuid.uuid4()), card_id=card_id, pin_type=pin_type, pin=pin)
        return self.pins.VerifyPin(req, timeout=timeout, metadata=self.metadata)

    def change(self, card_id: str, pin_type: int, current: str, new: str, request_id: str | None = None):
        req = ppb.ChangePinRequest(
            request_id=request_id or str(uuid.uuid4()), card_id=card_id, pin_type=pin_type, current_pin=current, new_pin=new
        )
        return self.pins.ChangePin(req, timeout=10, metadata=self.metadata)

    def status(self, card_id: str, pin_type: int = pb.PIN_TYPE_UNSPECIFIED) -> ppb.GetPinStatusResponse:
        return self.pins.GetPinStatus(
            ppb.GetPinStatusRequest(card_id=card_id, pin_type=pin_type), timeout=10, metadata=self.metadata
        )


def development_metadata(terminal: str, office: str | None = None, chain: str | None = None) -> list[tuple[str, str]]:
    """The headers of a development-mode caller (service/api/auth.py)."""
    metadata = [("x-pinlife-terminal", terminal)]
    if office:  # act as a counter of this office
        metadata.append(("x-pinlife-office", office))
    if chain:  # act as a kiosk of this store chain
        metadata.append(("x-pinlife-chain", chain))
    return metadata


def field_violations(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    out: dict[str, str] = {}
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def precondition_violations(err: grpc.RpcError) -> list[error_details_pb2.PreconditionFailure.Violation]:
    status = rpc_status.from_call(err)
    out = []
    for detail in status.details if status else ():
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure):
            out.extend(failure.violations)
    return out


def retry_seconds(err: grpc.RpcError) -> int:
    """The RetryInfo delay an error carries (UNAVAILABLE, RESOURCE_EXHAUSTED)."""
    for detail in rpc_status.from_call(err).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds
    raise AssertionError("no RetryInfo")
