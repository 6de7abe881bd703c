"""Servicers only translate: request to command, answer to response. Each RPC
is wrapped by `rpc`, which identifies the caller, maps errors to canonical
codes and writes the one log line per call; and, when the server keeps
them, counts and times it (service/runtime/metrics.py) and traces it
(service/runtime/tracing.py). Both are None when off: a call then pays one
attribute test for each."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog

from ..app.handlers import Caller
from ..app.ports import StoreUnavailable
from ..app.service import PinLife
from ..domain.access import PermissionDenied, authorize
from ..domain.card_ids import validate_card_id
from ..domain.commands import (
    ChangePin,
    CompleteProxyReset,
    EnrollCard,
    RequestProxyReset,
    ReserveStoreReset,
    ResetPin,
    ResumeCard,
    StoreResetPin,
    SuspendCard,
    UnlockPin,
    VerifyPin,
)
from ..domain.errors import DomainError, FieldViolation, InvalidInput
from ..domain.outcomes import CheckResult, ProxyResult
from ..domain.rate import RateLimited
from ..runtime import logs
from ..v1 import counter_service_pb2 as counter_pb
from ..v1 import counter_service_pb2_grpc as counter_grpc
from ..v1 import pin_service_pb2 as pin_pb
from ..v1 import pin_service_pb2_grpc as pin_grpc
from ..v1 import store_service_pb2 as store_pb
from ..v1 import store_service_pb2_grpc as store_grpc
from . import mapping
from .auth import development_caller
from .errors import code_for, grpc_status
from .rate_limit import RateLimiter
from .registration import Undecodable

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ..runtime.metrics import Metrics, RpcMetrics
    from ..runtime.tracing import Tracing

log = structlog.get_logger()

PIN_SERVICE = pin_pb.DESCRIPTOR.services_by_name["PinService"].full_name
COUNTER_SERVICE = counter_pb.DESCRIPTOR.services_by_name["CounterService"].full_name
STORE_SERVICE = store_pb.DESCRIPTOR.services_by_name["ConvenienceStoreService"].full_name

_S = TypeVar("_S", bound="_Base")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


async def _admit(self, request, context: grpc.aio.ServicerContext, full_name: str) -> Caller:
    """Who calls, whether it is within its request rate (refused unrecorded:
    rate_limit.py), and whether its role may call this RPC (a refusal is recorded)."""
    caller: Caller = self.identify(context)
    logs.bind_context(terminal=caller.terminal_id, channel=caller.channel)
    if self.gate.limiter is not None:
        self.gate.limiter.admit(caller)  # over its rate: RateLimited, before any other work
    try:
        authorize(full_name, caller.role)
    except PermissionDenied:
        try:
            await self.app.record_refusal(caller, full_name, getattr(request, "request_id", ""), getattr(request, "card_id", ""))
        except StoreUnavailable:
            log.warning("refusal_not_recorded", reason="store unavailable")
        raise
    if isinstance(request, Undecodable):
        raise InvalidInput(FieldViolation("request", f"is not a valid {request.type_name} message"))
    return caller


def _failed(exc: BaseException) -> BaseException:
    if not isinstance(exc, (DomainError, StoreUnavailable)):  # never a stack trace to the caller
        log.error("rpc_internal_error", error=type(exc).__name__, exc_info=True)
    return exc


def _log_call(
    started: float,
    failure: BaseException | None,
    context: grpc.aio.ServicerContext,
    calls: RpcMetrics | None,
    ended: bool = True,
) -> str:
    """The one log line of a call and its metrics; its code (ended: False
    when a stream was closed before it ended: its client went away)."""
    code = "OK" if failure is None else code_for(failure).name
    if (context.cancelled() or not ended) and failure is None:
        code = "CANCELLED"
    seconds = time.perf_counter() - started
    if not isinstance(failure, RateLimited):  # those are counted, and logged per terminal and minute (rate_limit.py)
        log.info("rpc", status=code, duration_ms=round(seconds * 1000, 3))
    if calls is not None:
        calls.handled(code, seconds)
    return code


def _traced(tracing: Tracing, full_name: str, context: grpc.aio.ServicerContext) -> Span:
    """A call's span, started from the caller's traceparent; its trace id in the call's log lines."""
    span = tracing.start_rpc(full_name, context.invocation_metadata())
    logs.bind_context(trace_id=tracing.trace_id(span))
    return span


STOPPING = "the server is stopping; nothing was done: retry (another instance)"


class Gate:
    """The calls a server admits: every call while it serves, within its
    terminal's request rate (`limiter`, none: no limit); none once it
    stops (UNAVAILABLE, nothing done, before gRPC's own shutdown could
    cancel a call mid-way), while those in flight finish."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self.closed = False
        self.in_flight = 0
        self.limiter = limiter

    async def drained(self, timeout: float) -> bool:
        """Close, then wait (up to timeout) until no admitted call runs."""
        self.closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.in_flight


def rpc(
    service: str, name: str
) -> Callable[
    [Callable[[_S, _Req, Caller], Awaitable[_Resp]]],
    Callable[[_S, _Req, grpc.aio.ServicerContext], Coroutine[Any, Any, _Resp]],
]:
    """A unary RPC: identify and authorize the caller, run, map errors to
    canonical codes, write the one log line per call."""
    full_name = f"/{service}/{name}"

    def decorate(
        fn: Callable[[_S, _Req, Caller], Awaitable[_Resp]],
    ) -> Callable[[_S, _Req, grpc.aio.ServicerContext], Coroutine[Any, Any, _Resp]]:
        @functools.wraps(fn)
        async def wrapper(self: _S, request: _Req, context: grpc.aio.ServicerContext) -> _Resp:
            started = time.perf_counter()
            logs.new_context(rpc=name, card=loggable_card_id(request))
            metrics, tracing = self.metrics, self.tracing
            calls = None if metrics is None else metrics.rpc(full_name, "unary")
            if calls is not None:
                calls.started.inc()
            span: Span | None = None
            token: object = None
            if tracing is not None:
                span = _traced(tracing, full_name, context)
                token = tracing.enter(span)  # current while it runs: its command's batch spans are its children
            failure: BaseException | None = None
            gate = self.gate
            gate.in_flight += 1
            try:
                if gate.closed:
                    raise StoreUnavailable(STOPPING)
                caller = await _admit(self, request, context, full_name)
                return await fn(self, request, caller)
            except Exception as exc:  # noqa: BLE001
                failure = _failed(exc)
            finally:
                gate.in_flight -= 1
                code = _log_call(started, failure, context, calls)
                if tracing is not None and span is not None:
                    tracing.leave(token)
                    tracing.end_rpc(span, code)
            await context.abort_with_status(grpc_status(failure))

        return wrapper

    return decorate


def rpc_stream(
    service: str, name: str
) -> Callable[
    [Callable[[_S, _Req, Caller], AsyncIterator[_Resp]]],
    Callable[[_S, _Req, grpc.aio.ServicerContext], AsyncIterator[_Resp]],
]:
    """A server-streaming RPC: as `rpc`, for an async generator of responses."""
    full_name = f"/{service}/{name}"

    def decorate(
        fn: Callable[[_S, _Req, Caller], AsyncIterator[_Resp]],
    ) -> Callable[[_S, _Req, grpc.aio.ServicerContext], AsyncIterator[_Resp]]:
        @functools.wraps(fn)
        async def wrapper(self: _S, request: _Req, context: grpc.aio.ServicerContext) -> AsyncIterator[_Resp]:
            started = time.perf_counter()
            logs.new_context(rpc=name, card=loggable_card_id(request))
            metrics, tracing = self.metrics, self.tracing
            calls = None if metrics is None else metrics.rpc(full_name, "server_stream")
            if calls is not None:
                calls.started.inc()
            # A stream's span is not made current: the generator's context is
            # its consumer's between responses (and a stream writes nothing).
            span = None if tracing is None else _traced(tracing, full_name, context)
            failure: BaseException | None = None
            ended = False
            try:
                if self.gate.closed:
                    raise StoreUnavailable(STOPPING)
                caller = await _admit(self, request, context, full_name)
                async for response in fn(self, request, caller):
                    yield response
                ended = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                failure = _failed(exc)
            finally:
                code = _log_call(started, failure, context, calls, ended)
                if tracing is not None and span is not None:
                    tracing.end_rpc(span, code)
            if failure is not None:
                await context.abort_with_status(grpc_status(failure))

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
    def __init__(
        self,
        app: PinLife,
        identify: Callable[[grpc.aio.ServicerContext], Caller] = development_caller,
        gate: Gate | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ):
        self.app = app
        self.identify = identify
        self.gate = gate or Gate()  # the endpoint gives its servicers one gate
        self.metrics = metrics  # when the server keeps metrics
        self.tracing = tracing  # when it traces


class PinServicer(_Base, pin_grpc.PinServiceServicer):
    @rpc(PIN_SERVICE, "VerifyPin")
    async def VerifyPin(self, request: pin_pb.VerifyPinRequest, caller: Caller) -> pin_pb.VerifyPinResponse:
        cmd = VerifyPin.create(
            request.request_id, request.card_id, mapping.pin_type(request.pin_type), request.pin, caller.office
        )
        answer = await self.app.execute(cmd, caller)
        return pin_pb.VerifyPinResponse(check=mapping.pin_check(answer.outcome), replayed=answer.replayed)

    @rpc(PIN_SERVICE, "ChangePin")
    async def ChangePin(self, request: pin_pb.ChangePinRequest, caller: Caller) -> pin_pb.ChangePinResponse:
        cmd = ChangePin.create(
            request.request_id,
            request.card_id,
            mapping.pin_type(request.pin_type),
            request.current_pin,
            request.new_pin,
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        check = mapping.pin_check(answer.outcome)
        return pin_pb.ChangePinResponse(check=check, changed=answer.outcome.result is CheckResult.OK, replayed=answer.replayed)

    @rpc(PIN_SERVICE, "ReserveStoreReset")
    async def ReserveStoreReset(
        self, request: pin_pb.ReserveStoreResetRequest, caller: Caller
    ) -> pin_pb.ReserveStoreResetResponse:
        cmd = ReserveStoreReset.create(
            request.request_id, request.card_id, mapping.pin_type(request.pin_type), request.proving_pin
        )
        answer = await self.app.execute(cmd, caller)
        o = answer.outcome
        response = pin_pb.ReserveStoreResetResponse(
            check=mapping.pin_check(o.check), reserved=o.reservation_id is not None, replayed=answer.replayed
        )
        if o.reservation_id is not None:
            response.reservation_id = o.reservation_id
            response.expires_at.CopyFrom(mapping.timestamp(o.expires_at))
        if o.proving_pin_type is not None:
            response.proving_pin_type = mapping.PIN_TYPE_TO_PROTO[o.proving_pin_type]
        return response

    @rpc(PIN_SERVICE, "GetPinStatus")
    async def GetPinStatus(self, request: pin_pb.GetPinStatusRequest, caller: Caller) -> pin_pb.GetPinStatusResponse:
        only = mapping.optional_pin_type(request.pin_type)
        card = await self.app.card_status(request.card_id, caller, only)
        return pin_pb.GetPinStatusResponse(
            card_id=card.state.card_id,
            card_status=mapping.CARD_STATUS_TO_PROTO[card.state.status],
            pins=mapping.pin_states(card.pins),
            stream_version=card.state.version,
        )


class CounterServicer(_Base, counter_grpc.CounterServiceServicer):
    @rpc(COUNTER_SERVICE, "ResetPin")
    async def ResetPin(self, request: counter_pb.ResetPinRequest, caller: Caller) -> counter_pb.ResetPinResponse:
        cmd = ResetPin.create(
            request.request_id,
            request.card_id,
            mapping.pin_type(request.pin_type),
            request.new_pin,
            mapping.applicant(request.applicant),
            mapping.documents(request.documents),
            request.adult_ward,
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        return counter_pb.ResetPinResponse(
            pin=mapping.pin_state(answer.pins[0]),
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )

    @rpc(COUNTER_SERVICE, "UnlockPin")
    async def UnlockPin(self, request: counter_pb.UnlockPinRequest, caller: Caller) -> counter_pb.UnlockPinResponse:
        cmd = UnlockPin.create(
            request.request_id,
            request.card_id,
            mapping.pin_type(request.pin_type),
            mapping.applicant(request.applicant),
            mapping.documents(request.documents),
            request.adult_ward,
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        return counter_pb.UnlockPinResponse(
            pin=mapping.pin_state(answer.pins[0]),
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )

    @rpc(COUNTER_SERVICE, "RequestProxyReset")
    async def RequestProxyReset(
        self, request: counter_pb.RequestProxyResetRequest, caller: Caller
    ) -> counter_pb.RequestProxyResetResponse:
        cmd = RequestProxyReset.create(
            request.request_id,
            request.card_id,
            mapping.pin_type(request.pin_type),
            mapping.documents(request.documents),
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        o = answer.outcome
        return counter_pb.RequestProxyResetResponse(
            inquiry_id=o.inquiry_id,
            code=o.code or "",
            expires_at=mapping.timestamp(o.expires_at),
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )

    @rpc(COUNTER_SERVICE, "CompleteProxyReset")
    async def CompleteProxyReset(
        self, request: counter_pb.CompleteProxyResetRequest, caller: Caller
    ) -> counter_pb.CompleteProxyResetResponse:
        cmd = CompleteProxyReset.create(
            request.request_id,
            request.card_id,
            mapping.pin_type(request.pin_type),
            request.inquiry_id,
            request.code,
            request.new_pin,
            mapping.documents(request.documents),
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        o = answer.outcome
        response = counter_pb.CompleteProxyResetResponse(
            result=PROXY_RESULT_TO_PROTO[o.result],
            remaining_attempts=o.remaining_attempts,
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )
        if o.result is ProxyResult.COMPLETED:
            response.pin.CopyFrom(mapping.pin_state(answer.pins[0]))
        return response

    @rpc(COUNTER_SERVICE, "SuspendCard")
    async def SuspendCard(self, request: counter_pb.SuspendCardRequest, caller: Caller) -> counter_pb.SuspendCardResponse:
        cmd = SuspendCard.create(request.request_id, request.card_id, SUSPENSION_REASONS.get(request.reason), caller.office)
        answer = await self.app.execute(cmd, caller)
        return counter_pb.SuspendCardResponse(
            card_status=mapping.CARD_STATUS_TO_PROTO[answer.outcome.status],
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )

    @rpc(COUNTER_SERVICE, "ResumeCard")
    async def ResumeCard(self, request: counter_pb.ResumeCardRequest, caller: Caller) -> counter_pb.ResumeCardResponse:
        cmd = ResumeCard.create(
            request.request_id,
            request.card_id,
            mapping.applicant(request.applicant),
            mapping.documents(request.documents),
            request.adult_ward,
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        return counter_pb.ResumeCardResponse(
            card_status=mapping.CARD_STATUS_TO_PROTO[answer.outcome.status],
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )

    @rpc(COUNTER_SERVICE, "EnrollCard")
    async def EnrollCard(self, request: counter_pb.EnrollCardRequest, caller: Caller) -> counter_pb.EnrollCardResponse:
        cmd = EnrollCard.create(
            request.request_id,
            request.card_id,
            [(mapping.pin_type(p.pin_type), p.pin) for p in request.pins],
            request.ward or None,
            caller.office,
        )
        answer = await self.app.execute(cmd, caller)
        return counter_pb.EnrollCardResponse(
            card_id=answer.outcome.card_id,
            pins=mapping.pin_states(answer.pins),
            stream_version=answer.stream_version,
            replayed=answer.replayed,
        )


PROXY_RESULT_TO_PROTO = {
    ProxyResult.COMPLETED: counter_pb.PROXY_RESET_RESULT_COMPLETED,
    ProxyResult.WRONG_CODE: counter_pb.PROXY_RESET_RESULT_WRONG_CODE,
    ProxyResult.VOIDED: counter_pb.PROXY_RESET_RESULT_VOIDED,
    ProxyResult.EXPIRED: counter_pb.PROXY_RESET_RESULT_EXPIRED,
    ProxyResult.NO_OPEN_INQUIRY: counter_pb.PROXY_RESET_RESULT_NO_OPEN_INQUIRY,
}
SUSPENSION_REASONS = {
    counter_pb.SUSPENSION_REASON_LOST: "lost",
    counter_pb.SUSPENSION_REASON_STOLEN: "stolen",
    counter_pb.SUSPENSION_REASON_OTHER: "other",
}


class StoreServicer(_Base, store_grpc.ConvenienceStoreServiceServicer):
    @rpc(STORE_SERVICE, "ResetPin")
    async def ResetPin(self, request: store_pb.StoreResetPinRequest, caller: Caller) -> store_pb.StoreResetPinResponse:
        cmd = StoreResetPin.create(
            request.request_id,
            request.card_id,
            mapping.pin_type(request.pin_type),
            request.proving_pin,
            request.new_pin,
            caller.chain,
        )
        answer = await self.app.execute(cmd, caller)
        o = answer.outcome
        return store_pb.StoreResetPinResponse(
            check=mapping.pin_check(o.check), reset=o.reset, stream_version=answer.stream_version, replayed=answer.replayed
        )
