"""The client commands of PinService, CounterService and
ConvenienceStoreService: what a card reader, a counter, the reset app and a
kiosk send, from the command line. A PIN left off the command line is read
without echo; PINs are never printed. Each request gets a fresh request id."""

from __future__ import annotations

import argparse
import uuid

from ..v1 import common_pb2 as pb
from ..v1 import counter_service_pb2 as cpb
from ..v1 import counter_service_pb2_grpc, pin_service_pb2_grpc, store_service_pb2_grpc
from ..v1 import pin_service_pb2 as ppb
from ..v1 import store_service_pb2 as spb
from .client import applicant, ask, call, channel, documents, pin_type


def _request_id() -> str:
    return str(uuid.uuid4())


def _pins(args: argparse.Namespace) -> pin_service_pb2_grpc.PinServiceStub:
    return pin_service_pb2_grpc.PinServiceStub(channel(args))


def _counter(args: argparse.Namespace) -> counter_service_pb2_grpc.CounterServiceStub:
    return counter_service_pb2_grpc.CounterServiceStub(channel(args))


def enroll(args: argparse.Namespace) -> None:
    pins = []
    for item in args.pin:
        name, sep, value = item.partition("=")
        pins.append(cpb.InitialPin(pin_type=pin_type(name), pin=value if sep else ask(f"{name} PIN: ", None)))
    request = cpb.EnrollCardRequest(request_id=_request_id(), card_id=args.card, pins=pins, ward=args.ward or "")
    call(_counter(args).EnrollCard, request, args)


def verify(args: argparse.Namespace) -> None:
    request = ppb.VerifyPinRequest(
        request_id=_request_id(), card_id=args.card, pin_type=pin_type(args.type), pin=ask("PIN: ", args.pin)
    )
    call(_pins(args).VerifyPin, request, args)


def change(args: argparse.Namespace) -> None:
    request = ppb.ChangePinRequest(
        request_id=_request_id(),
        card_id=args.card,
        pin_type=pin_type(args.type),
        current_pin=ask("current PIN: ", args.current),
        new_pin=ask("new PIN: ", args.new),
    )
    call(_pins(args).ChangePin, request, args)


def status(args: argparse.Namespace) -> None:
    only = pin_type(args.type) if args.type else pb.PIN_TYPE_UNSPECIFIED
    call(_pins(args).GetPinStatus, ppb.GetPinStatusRequest(card_id=args.card, pin_type=only), args)


def reset(args: argparse.Namespace) -> None:
    request = cpb.ResetPinRequest(
        request_id=_request_id(),
        card_id=args.card,
        pin_type=pin_type(args.type),
        new_pin=ask("new PIN: ", args.new),
        applicant=applicant(args.applicant),
        documents=documents(args.doc),
        adult_ward=args.adult_ward,
    )
    call(_counter(args).ResetPin, request, args)


def unlock(args: argparse.Namespace) -> None:
    request = cpb.UnlockPinRequest(
        request_id=_request_id(),
        card_id=args.card,
        pin_type=pin_type(args.type),
        applicant=applicant(args.applicant),
        documents=documents(args.doc),
        adult_ward=args.adult_ward,
    )
    call(_counter(args).UnlockPin, request, args)


def proxy_request(args: argparse.Namespace) -> None:
    request = cpb.RequestProxyResetRequest(
        request_id=_request_id(), card_id=args.card, pin_type=pin_type(args.type), documents=documents(args.doc)
    )
    call(_counter(args).RequestProxyReset, request, args)


def proxy_complete(args: argparse.Namespace) -> None:
    request = cpb.CompleteProxyResetRequest(
        request_id=_request_id(),
        card_id=args.card,
        pin_type=pin_type(args.type),
        inquiry_id=args.inquiry_id,
        code=ask("inquiry code: ", args.code),
        new_pin=ask("new PIN: ", args.new),
        documents=documents(args.doc),
    )
    call(_counter(args).CompleteProxyReset, request, args)


def suspend(args: argparse.Namespace) -> None:
    reason = cpb.SuspensionReason.Value(f"SUSPENSION_REASON_{args.reason.upper()}")
    request = cpb.SuspendCardRequest(request_id=_request_id(), card_id=args.card, reason=reason)
    call(_counter(args).SuspendCard, request, args)


def resume(args: argparse.Namespace) -> None:
    request = cpb.ResumeCardRequest(
        request_id=_request_id(),
        card_id=args.card,
        applicant=applicant(args.applicant),
        documents=documents(args.doc),
        adult_ward=args.adult_ward,
    )
    call(_counter(args).ResumeCard, request, args)


def reserve(args: argparse.Namespace) -> None:
    request = ppb.ReserveStoreResetRequest(
        request_id=_request_id(),
        card_id=args.card,
        pin_type=pin_type(args.type),
        proving_pin=ask("the other certificate's PIN: ", args.proving),
    )
    call(_pins(args).ReserveStoreReset, request, args)


def store_reset(args: argparse.Namespace) -> None:
    request = spb.StoreResetPinRequest(
        request_id=_request_id(),
        card_id=args.card,
        pin_type=pin_type(args.type),
        proving_pin=ask("the PIN proved when reserving: ", args.proving),
        new_pin=ask("new PIN: ", args.new),
    )
    call(store_service_pb2_grpc.ConvenienceStoreServiceStub(channel(args)).ResetPin, request, args)
