"""The reset procedures' calls and the story their tests share, for a
client over a channel (tests/e2e/test_procedures.py) or straight into the
servicers (tests/unit/test_api_procedures.py): a card of ward naka, its
counter, the clinic's reader, the reset app, a kiosk and the call centre, on
a Tuesday at 10:00 in Tokyo (the ward office and the kiosks are open)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from pinlife.v1 import store_service_pb2 as spb
from tests.rpc import Calls as Client

USER, SIGN = pb.PIN_TYPE_USER_CERTIFICATE, pb.PIN_TYPE_SIGNATURE
RESIDENT = pb.PIN_TYPE_RESIDENT_REGISTRY
PINS = {RESIDENT: "4821", USER: "4821", SIGN: "KX73PQ"}
JST = timezone(timedelta(hours=9))
TUESDAY_10 = datetime(2026, 12, 1, 10, 0, tzinfo=JST)  # the ward office and the kiosks are open
NAKA = "naka-ward-office"  # serves ward "naka"
TSURUMI = "tsurumi-ward-office"  # does not

D = pb.Document
CARD = D(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)
PHOTO_ID = D(type=pb.DOCUMENT_TYPE_PUBLIC_PHOTO_ID)
OTHER_ID = D(type=pb.DOCUMENT_TYPE_OTHER_ID)
SECOND_VISIT = [CARD, D(type=pb.DOCUMENT_TYPE_INQUIRY_FORM), D(type=pb.DOCUMENT_TYPE_POWER_OF_ATTORNEY), PHOTO_ID]

# The callers, by name: terminal, and the office or store chain it acts for (development headers).
CALLERS = {
    "reader": ("clinic-reader-01", None, None),
    "naka": ("naka-counter-01", NAKA, None),
    "tsurumi": ("tsurumi-counter-01", TSURUMI, None),
    "app": ("reset-app", None, None),
    "kiosk": ("kiosk-0001", None, "example-chain"),
    "call": ("call-centre-01", None, None),
}


def rid() -> str:
    return str(uuid.uuid4())


def enroll(c: Client, card: str, ward: str | None = "naka") -> None:
    req = cpb.EnrollCardRequest(
        request_id=rid(), card_id=card, ward=ward or "", pins=[cpb.InitialPin(pin_type=t, pin=p) for t, p in PINS.items()]
    )
    c.counter.EnrollCard(req, timeout=10, metadata=c.metadata)


def lock(c: Client, card: str, pin_type: int, wrong: str, times: int):
    for _ in range(times):
        last = c.verify(card, pin_type, wrong).check
    return last


def reset(c: Client, card: str, pin_type: int = USER, new_pin: str = "1357", documents=(CARD,), **kw):
    req = cpb.ResetPinRequest(
        request_id=kw.pop("request_id", rid()),
        card_id=card,
        pin_type=pin_type,
        new_pin=new_pin,
        applicant=kw.pop("applicant", pb.APPLICANT_HOLDER),
        documents=list(documents),
        **kw,
    )
    return c.counter.ResetPin(req, timeout=10, metadata=c.metadata)


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    return info.value


def proxy_request(c: Client, card: str, request_id: str | None = None):
    req = cpb.RequestProxyResetRequest(request_id=request_id or rid(), card_id=card, pin_type=USER, documents=[CARD, OTHER_ID])
    return c.counter.RequestProxyReset(req, timeout=10, metadata=c.metadata)


def proxy_complete(c: Client, card: str, inquiry_id: str, code: str, new_pin: str = "2468"):
    req = cpb.CompleteProxyResetRequest(
        request_id=rid(), card_id=card, pin_type=USER, inquiry_id=inquiry_id, code=code, new_pin=new_pin, documents=SECOND_VISIT
    )
    return c.counter.CompleteProxyReset(req, timeout=10, metadata=c.metadata)


def reserve(c: Client, card: str, proving: str, pin_type: int = SIGN):
    req = ppb.ReserveStoreResetRequest(request_id=rid(), card_id=card, pin_type=pin_type, proving_pin=proving)
    return c.pins.ReserveStoreReset(req, timeout=10, metadata=c.metadata)


def kiosk_reset(c: Client, card: str, proving: str, new_pin: str = "NEWPIN7", pin_type: int = SIGN):
    req = spb.StoreResetPinRequest(request_id=rid(), card_id=card, pin_type=pin_type, proving_pin=proving, new_pin=new_pin)
    return c.store.ResetPin(req, timeout=10, metadata=c.metadata)
