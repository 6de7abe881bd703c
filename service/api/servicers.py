"""Servicers only translate: request to command, answer to response. Each RPC
is wrapped by `rpc`, which identifies the caller, maps errors to canonical
codes and writes the one log line per call."""

from __future__ import annotations

import functools
import time
from typing import Awaitable, Callable

import grpc
import structlog
from grpc_status import rpc_status

from pinlife.v1 import counter_service_pb2 as counter_pb
from pinlife.v1 import counter_service_pb2_grpc as counter_grpc
from pinlife.v1 import pin_service_pb2 as pin_pb
from pinlife.v1 import pin_service_pb2_grpc as pin_grpc
from service import logs
from service.api import mapping
from service.api.auth import development_caller
from service.api.errors import code_for, to_status
from service.api.registration import Undecodable
from service.app.handlers import Caller
from service.app.service import PinLife
from service.domain.commands import ChangePin, EnrollCard, VerifyPin
from service.domain.decide import CheckResult
from service.domain.state import enrolled_card
from service.domain.access import PermissionDenied, authorize
from service.domain.card_ids import validate_card_id
from service.domain.errors import DomainError, FieldViolation, InvalidInput
from service.app.ports import StoreUnavailable

log = structlog.get_logger()

PIN_SERVICE = pin_pb.DESCRIPTOR.services_by_name["PinService"].full_name
COUNTER_SERVICE = counter_pb.DESCRIPTOR.services_by_name["CounterService"].full_name

Handler = Callable[..., Awaitable[object]]


def rpc(service: str, name: str) -> Callable[[Handler], Handler]:
    full_name = f"/{service}/{name}"

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def wrapper(self, request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            logs.new_context(rpc=name, card=loggable_card_id(request))
            failure: BaseException | None = None
            try:
                caller: Caller = self.identify(context)
                logs.bind_context(terminal=caller.terminal_id, channel=caller.channel)
                try:
                    authorize(full_name, caller.role)
                except PermissionDenied:
                    try:
                        await self.app.record_refusal(
                            caller, full_name, getattr(request, "request_id", ""), getattr(request, "card_id", "")
                        )
                    except StoreUnavailable:
                        log.warning("refusal_not_recorded", reason="store unavailable")
                    raise
                if isinstance(request, Undecodable):
                    raise InvalidInput(FieldViolation("request", f"is not a valid {request.type_name} message"))
                return await fn(self, request, caller)
            except (DomainError, StoreUnavailable) as exc:
                failure = exc
            except Exception as exc:  # noqa: BLE001 - never a stack trace to the caller
                log.error("rpc_internal_error", error=type(exc).__name__, exc_info=True)
                failure = exc
            finally:
                code = "OK" if failure is None else code_for(failure).name
                if context.cancelled() and failure is None:
                    code = "CANCELLED"
                log.info("rpc", status=code, duration_ms=round((time.perf_counter() - started) * 1000, 3))
            await context.abort_with_status(rpc_status.to_status(to_status(failure)))

        return wrapper

    return decorate


def loggable_card_id(request) -> str | None:
    """The card id for the log line, unless it is malformed or looks like an
    Individual Number (which must not reach a log either)."""
    card_id = getattr(request, "card_id", "")
    if not card_id:
        return None
    try:
        return validate_card_id(card_id)
    except InvalidInput:
        return "[invalid]"


class _Base:
    def __init__(self, app: PinLife, identify: Callable[[grpc.aio.ServicerContext], Caller] = development_caller):
        self.app = app
        self.identify = identify


class PinServicer(_Base, pin_grpc.PinServiceServicer):
    @rpc(PIN_SERVICE, "VerifyPin")
    async def VerifyPin(self, request: pin_pb.VerifyPinRequest, caller: Caller):
        cmd = VerifyPin.create(request.request_id, request.card_id, mapping.pin_type(request.pin_type), request.pin)
        answer = await self.app.execute(cmd, caller)
        return pin_pb.VerifyPinResponse(check=mapping.pin_check(answer.outcome), replayed=answer.replayed)

    @rpc(PIN_SERVICE, "ChangePin")
    async def ChangePin(self, request: pin_pb.ChangePinRequest, caller: Caller):
        cmd = ChangePin.create(
            request.request_id, request.card_id, mapping.pin_type(request.pin_type), request.current_pin, request.new_pin
        )
        answer = await self.app.execute(cmd, caller)
        check = mapping.pin_check(answer.outcome)
        return pin_pb.ChangePinResponse(check=check, changed=answer.outcome.result is CheckResult.OK, replayed=answer.replayed)

    @rpc(PIN_SERVICE, "GetPinStatus")
    async def GetPinStatus(self, request: pin_pb.GetPinStatusRequest, caller: Caller):
        only = mapping.optional_pin_type(request.pin_type)
        card = await self.app.card_status(request.card_id, caller)
        return pin_pb.GetPinStatusResponse(
            card_id=card.card_id,
            card_status=mapping.CARD_STATUS_TO_PROTO[card.status],
            pins=mapping.pin_states(card, only),
            stream_version=card.version,
        )


class CounterServicer(_Base, counter_grpc.CounterServiceServicer):
    @rpc(COUNTER_SERVICE, "EnrollCard")
    async def EnrollCard(self, request: counter_pb.EnrollCardRequest, caller: Caller):
        cmd = EnrollCard.create(
            request.request_id, request.card_id, [(mapping.pin_type(p.pin_type), p.pin) for p in request.pins]
        )
        answer = await self.app.execute(cmd, caller)
        enrolled = answer.outcome
        card = enrolled_card(enrolled.card_id, enrolled.pin_types)
        return counter_pb.EnrollCardResponse(
            card_id=enrolled.card_id,
            pins=mapping.pin_states(card),
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )
