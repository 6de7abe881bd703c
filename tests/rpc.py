"""What a test client of the API does on either layer: the calls with their
requests built (Calls: over a real channel in tests/e2e/harness.py, straight
into the servicers in tests/unit/direct.py), and the rich error details an
error carries (google.rpc.Status in its trailing metadata)."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from pinlife.v1 import store_service_pb2 as spb


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

    def status(self, card_id: str, pin_type: int = pb.PIN_TYPE_UNSPECIFIED, timeout: float = 10) -> ppb.GetPinStatusResponse:
        return self.pins.GetPinStatus(
            ppb.GetPinStatusRequest(card_id=card_id, pin_type=pin_type), timeout=timeout, metadata=self.metadata
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


def replayed_refusal(err: grpc.RpcError) -> bool:
    """Whether an error is a kept refusal replayed to a retry of its request id."""
    return ("x-pinlife-replayed", "true") in [(m[0], m[1]) for m in err.trailing_metadata() or ()]


def retry_seconds(err: grpc.RpcError) -> int:
    """The RetryInfo delay an error carries (UNAVAILABLE, RESOURCE_EXHAUSTED)."""
    for detail in rpc_status.from_call(err).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds
    raise AssertionError("no RetryInfo")


# -- every RPC once ---------------------------------------------------------------------
# Each RPC called with a well-formed request about card-T1 (enrolled with
# user certificate PIN 4821 and signature PIN ABC123), on a client whose
# identity the server knows otherwise (a certificate, a test's own caller):
# no metadata. AuditService's need a client over a channel (harness.Client).
USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGNATURE = pb.PIN_TYPE_SIGNATURE
HOLDER_CARD = [pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)]
CALLS_AT = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC)  # a Tuesday, 10:00 in Tokyo: the counters and kiosks are open


CALLS = {
    "/pinlife.v1.PinService/VerifyPin": lambda c: c.pins.VerifyPin(
        ppb.VerifyPinRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, pin="4821"), timeout=10
    ),
    "/pinlife.v1.PinService/ChangePin": lambda c: c.pins.ChangePin(
        ppb.ChangePinRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, current_pin="4821", new_pin="4821"),
        timeout=10,
    ),
    "/pinlife.v1.PinService/GetPinStatus": lambda c: c.pins.GetPinStatus(ppb.GetPinStatusRequest(card_id="card-T1"), timeout=10),
    "/pinlife.v1.CounterService/EnrollCard": lambda c: c.counter.EnrollCard(
        cpb.EnrollCardRequest(
            request_id=str(uuid.uuid4()), card_id=f"card-{uuid.uuid4().hex[:8]}", pins=[cpb.InitialPin(pin_type=USER, pin="1234")]
        ),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/ResetPin": lambda c: c.counter.ResetPin(
        cpb.ResetPinRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-T1",
            pin_type=USER,
            new_pin="4821",
            applicant=pb.APPLICANT_HOLDER,
            documents=HOLDER_CARD,
        ),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/UnlockPin": lambda c: c.counter.UnlockPin(
        cpb.UnlockPinRequest(
            request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, applicant=pb.APPLICANT_HOLDER, documents=HOLDER_CARD
        ),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/RequestProxyReset": lambda c: c.counter.RequestProxyReset(
        cpb.RequestProxyResetRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-T1",
            pin_type=USER,
            documents=[*HOLDER_CARD, pb.Document(type=pb.DOCUMENT_TYPE_OTHER_ID)],
        ),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/CompleteProxyReset": lambda c: c.counter.CompleteProxyReset(
        cpb.CompleteProxyResetRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-T1",
            pin_type=USER,
            inquiry_id="not-an-open-inquiry",
            code="12345678",
            new_pin="4821",
            documents=[
                *HOLDER_CARD,
                *(
                    pb.Document(type=t)
                    for t in (pb.DOCUMENT_TYPE_INQUIRY_FORM, pb.DOCUMENT_TYPE_POWER_OF_ATTORNEY, pb.DOCUMENT_TYPE_PUBLIC_PHOTO_ID)
                ),
            ],
        ),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/SuspendCard": lambda c: c.counter.SuspendCard(
        cpb.SuspendCardRequest(request_id=str(uuid.uuid4()), card_id="card-T1", reason=cpb.SUSPENSION_REASON_LOST),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/ResumeCard": lambda c: c.counter.ResumeCard(
        cpb.ResumeCardRequest(
            request_id=str(uuid.uuid4()), card_id="card-T1", applicant=pb.APPLICANT_HOLDER, documents=HOLDER_CARD
        ),
        timeout=10,
    ),
    "/pinlife.v1.PinService/ReserveStoreReset": lambda c: c.pins.ReserveStoreReset(
        ppb.ReserveStoreResetRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=SIGNATURE, proving_pin="4821"),
        timeout=10,
    ),
    "/pinlife.v1.ConvenienceStoreService/ResetPin": lambda c: c.store.ResetPin(
        spb.StoreResetPinRequest(
            request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=SIGNATURE, proving_pin="4821", new_pin="NEW123"
        ),
        timeout=10,
    ),
    "/pinlife.v1.AuditService/GetCardHistory": lambda c: c.audit.GetCardHistory(
        apb.GetCardHistoryRequest(card_id="card-T1"), timeout=10
    ),
    "/pinlife.v1.AuditService/QueryEvents": lambda c: c.audit.QueryEvents(apb.QueryEventsRequest(page_size=5), timeout=10),
    "/pinlife.v1.AuditService/WatchEvents": lambda c: _first(c.audit.WatchEvents(apb.WatchEventsRequest(), timeout=10)),
    "/pinlife.v1.AuditService/VerifyIntegrity": lambda c: list(
        c.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-T1"), timeout=30)
    ),
    "/pinlife.v1.AuditService/GetCheckpoint": lambda c: _checkpoint(c),
    "/pinlife.v1.AuditService/GetInclusionProof": lambda c: _proof(
        lambda: c.audit.GetInclusionProof(apb.GetInclusionProofRequest(position=1, tree_size=1), timeout=10)
    ),
    "/pinlife.v1.AuditService/GetConsistencyProof": lambda c: _proof(
        lambda: c.audit.GetConsistencyProof(apb.GetConsistencyProofRequest(first_size=1, second_size=1), timeout=10)
    ),
    "/pinlife.v1.AuditService/GetStatistics": lambda c: c.audit.GetStatistics(
        apb.GetStatisticsRequest(**{"from": _ts(CALLS_AT - dt.timedelta(hours=1)), "to": _ts(CALLS_AT + dt.timedelta(hours=1))}),
        timeout=10,
    ),
}


def _ts(at: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _first(stream):
    try:
        return next(stream)
    finally:
        stream.cancel()


def _proof(call):
    try:
        return call()
    except grpc.RpcError as err:
        if err.code() not in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.INVALID_ARGUMENT):  # allowed, no such checkpoint
            raise
        return None


def _checkpoint(c):
    try:
        return c.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:  # allowed, nothing signed yet
            raise
        return None
