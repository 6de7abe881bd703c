"""One table from errors to canonical gRPC codes with rich details
(google.rpc.Status). Messages come from the domain and never carry a PIN."""

from __future__ import annotations

import collections
import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..app.ports import IntegrityViolation, StoreUnavailable
from ..domain.access import PermissionDenied, Unauthenticated
from ..domain.errors import (
    AlreadyExists,
    AtCapacity,
    DomainError,
    InvalidInput,
    LimitReached,
    NotFound,
    OutOfRange,
    PreconditionFailed,
)
from ..domain.rate import RateLimited
from ..domain.throttle import Throttled

CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),  # before InvalidInput, which it is too (its fields named alike)
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Throttled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AtCapacity, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitReached, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # What the database holds for the card does not authenticate: never acted on.
    (IntegrityViolation, grpc.StatusCode.DATA_LOSS),
]


REPLAYED = "x-pinlife-replayed"  # trailing metadata of a kept refusal replayed to a retry of its request id


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def to_status(exc: BaseException) -> status_pb2.Status:
    code = code_for(exc)
    if code is grpc.StatusCode.INTERNAL or not isinstance(exc, (DomainError, StoreUnavailable, IntegrityViolation)):
        message = "internal error; the request was not applied"
    else:
        message = str(exc)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(exc, InvalidInput):
        status.details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in exc.violations
                    ]
                )
            )
        )
    elif isinstance(exc, PreconditionFailed):
        status.details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(type=v.type, subject=v.subject, description=v.description)
                        for v in exc.violations
                    ]
                )
            )
        )
    elif isinstance(exc, StoreUnavailable):
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay={"seconds": 1})))
    elif isinstance(exc, RateLimited):
        # The exact delay until the terminal's next token (often under a second).
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(math.ceil(exc.retry_after.total_seconds() * 1000))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status.details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=f"terminal:{exc.terminal_id}", description=f"request rate of role {exc.role}: {exc.policy}"
                        )
                    ]
                )
            )
        )
    elif isinstance(exc, (Throttled, AtCapacity)):
        seconds = max(1, int(exc.retry_after.total_seconds()))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay={"seconds": seconds})))
    elif isinstance(exc, LimitReached):
        seconds = max(1, math.ceil(exc.retry_after.total_seconds()))  # never before it frees up
        violation = error_details_pb2.QuotaFailure.Violation(subject=exc.subject, description=str(exc))
        status.details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay={"seconds": seconds})))
    return status


def grpc_status(exc: BaseException) -> grpc.Status:
    """What the call ends with: the code, message and google.rpc details of
    to_status; a replayed refusal (DomainError.replayed) as it was first
    given, with `x-pinlife-replayed: true` in its trailing metadata."""
    status = rpc_status.to_status(to_status(exc))
    if isinstance(exc, DomainError) and exc.replayed:
        return _Status(status.code, status.details, (*status.trailing_metadata, (REPLAYED, "true")))
    return status
