"""One table from errors to canonical gRPC codes with rich details
(google.rpc.Status). Messages come from the domain and never carry a PIN."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from service.app.ports import IntegrityViolation, StoreUnavailable
from service.domain.access import PermissionDenied, Unauthenticated
from service.domain.errors import (
    AlreadyExists,
    AtCapacity,
    DomainError,
    InvalidInput,
    LimitReached,
    NotFound,
    PreconditionFailed,
)
from service.domain.throttle import Throttled

CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Throttled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AtCapacity, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitReached, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # What the database holds for the card does not authenticate: never acted on.
    (IntegrityViolation, grpc.StatusCode.DATA_LOSS),
]


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
    elif isinstance(exc, (Throttled, AtCapacity)):
        seconds = max(1, int(exc.retry_after.total_seconds()))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay={"seconds": seconds})))
    elif isinstance(exc, LimitReached):
        seconds = max(1, math.ceil(exc.retry_after.total_seconds()))  # never before it frees up
        violation = error_details_pb2.QuotaFailure.Violation(subject=exc.subject, description=str(exc))
        status.details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay={"seconds": seconds})))
    return status
