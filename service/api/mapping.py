"""Proto <-> domain translation, in one place."""

from __future__ import annotations

from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp

from ..domain.documents import Applicant, DocumentType
from ..domain.errors import InvalidInput
from ..domain.outcomes import CheckOutcome, CheckResult
from ..domain.pins import PinType, UnknownPinType, pin_type_violation
from ..domain.recovery import PinView, Procedure, Recovery, Route
from ..domain.state import CardStatus
from ..v1 import common_pb2 as pb

PIN_TYPE_TO_DOMAIN = {
    pb.PIN_TYPE_RESIDENT_REGISTRY: PinType.RESIDENT_REGISTRY,
    pb.PIN_TYPE_CARD_INFO_INPUT_SUPPORT: PinType.CARD_INFO_INPUT_SUPPORT,
    pb.PIN_TYPE_USER_CERTIFICATE: PinType.USER_CERTIFICATE,
    pb.PIN_TYPE_SIGNATURE: PinType.SIGNATURE,
}
PIN_TYPE_TO_PROTO = {v: k for k, v in PIN_TYPE_TO_DOMAIN.items()}

CHECK_RESULT_TO_PROTO = {
    CheckResult.OK: pb.CHECK_RESULT_OK,
    CheckResult.WRONG_PIN: pb.CHECK_RESULT_WRONG_PIN,
    CheckResult.LOCKED: pb.CHECK_RESULT_LOCKED,
    CheckResult.CARD_SUSPENDED: pb.CHECK_RESULT_CARD_SUSPENDED,
}

ROUTE_TO_PROTO = {
    Route.COUNTER: pb.RECOVERY_ROUTE_COUNTER,
    Route.CONVENIENCE_STORE_OR_COUNTER: pb.RECOVERY_ROUTE_CONVENIENCE_STORE_OR_COUNTER,
    Route.RESUME_AT_COUNTER: pb.RECOVERY_ROUTE_RESUME_AT_COUNTER,
}


PROCEDURE_TO_PROTO = {
    Procedure.COUNTER_RESET: pb.RECOVERY_PROCEDURE_COUNTER_RESET,
    Procedure.CONVENIENCE_STORE_RESET: pb.RECOVERY_PROCEDURE_CONVENIENCE_STORE_RESET,
    Procedure.COUNTER_RESUME: pb.RECOVERY_PROCEDURE_COUNTER_RESUME,
}

DOCUMENT_TYPE_TO_DOMAIN = {
    pb.DOCUMENT_TYPE_MY_NUMBER_CARD: DocumentType.MY_NUMBER_CARD,
    pb.DOCUMENT_TYPE_PUBLIC_PHOTO_ID: DocumentType.PUBLIC_PHOTO_ID,
    pb.DOCUMENT_TYPE_OTHER_ID: DocumentType.OTHER_ID,
    pb.DOCUMENT_TYPE_FAMILY_REGISTER: DocumentType.FAMILY_REGISTER,
    pb.DOCUMENT_TYPE_CERTIFICATE_OF_REGISTRATION: DocumentType.CERTIFICATE_OF_REGISTRATION,
    pb.DOCUMENT_TYPE_ADULT_GUARDIANSHIP_CERTIFICATE: DocumentType.ADULT_GUARDIANSHIP_CERTIFICATE,
    pb.DOCUMENT_TYPE_INQUIRY_FORM: DocumentType.INQUIRY_FORM,
    pb.DOCUMENT_TYPE_POWER_OF_ATTORNEY: DocumentType.POWER_OF_ATTORNEY,
}

APPLICANT_TO_DOMAIN = {
    pb.APPLICANT_HOLDER: Applicant.HOLDER,
    pb.APPLICANT_LEGAL_REPRESENTATIVE: Applicant.LEGAL_REPRESENTATIVE,
}

CARD_STATUS_TO_PROTO = {
    CardStatus.ACTIVE: pb.CARD_STATUS_ACTIVE,
    CardStatus.SUSPENDED: pb.CARD_STATUS_SUSPENDED,
}


def pin_type(value: pb.PinType.ValueType) -> PinType | UnknownPinType | None:
    """None for unspecified; an unknown value is kept as UnknownPinType. The
    command refuses both, with the message of pins.pin_type_violation."""
    found = PIN_TYPE_TO_DOMAIN.get(value)
    if found is None and value != pb.PIN_TYPE_UNSPECIFIED:
        return UnknownPinType(value)
    return found


def optional_pin_type(value: pb.PinType.ValueType) -> PinType | None:
    """For filters: unspecified means all; an unknown value is bad input."""
    if value == pb.PIN_TYPE_UNSPECIFIED:
        return None
    found = pin_type(value)
    if not isinstance(found, PinType):
        raise InvalidInput(pin_type_violation("pin_type", found))
    return found


def documents(docs) -> list[tuple[DocumentType | None, str]]:
    """Presented documents as the commands take them (an unknown type: None, refused there)."""
    return [(DOCUMENT_TYPE_TO_DOMAIN.get(d.type), d.issued_on) for d in docs]


def applicant(value: pb.Applicant.ValueType) -> Applicant | None:
    return APPLICANT_TO_DOMAIN.get(value)


def timestamp(at) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


@overload
def recovery(r: Recovery) -> pb.Recovery: ...
@overload
def recovery(r: None) -> None: ...
@overload
def recovery(r: Recovery | None) -> pb.Recovery | None: ...
def recovery(r: Recovery | None) -> pb.Recovery | None:
    if r is None:
        return None
    return pb.Recovery(
        route=ROUTE_TO_PROTO[r.route],
        description=r.description,
        procedures=[PROCEDURE_TO_PROTO[p] for p in r.procedures],
        next_openings=[pb.OfficeOpening(office_id=o.office_id, name=o.name, opens_at=timestamp(o.at)) for o in r.openings],
    )


def pin_check(o: CheckOutcome) -> pb.PinCheck:
    return pb.PinCheck(
        result=CHECK_RESULT_TO_PROTO[o.result],
        remaining_tries=o.remaining_tries,
        final_try=o.final_try,
        locked_now=o.locked_now,
        recovery=recovery(o.recovery),
        retry_limit=o.retry_limit,
    )


def pin_state(view: PinView) -> pb.PinState:
    p = view.pin
    msg = pb.PinState(
        pin_type=PIN_TYPE_TO_PROTO[p.pin_type],
        status=pb.PIN_STATUS_LOCKED if p.locked else pb.PIN_STATUS_ACTIVE,
        consecutive_failures=p.consecutive_failures,
        remaining_tries=p.remaining_tries,
        retry_limit=p.retry_limit,
        final_try=p.final_try,
        last_version=p.last_version,
    )
    if p.locked_at is not None:
        msg.locked_at.CopyFrom(timestamp(p.locked_at))
    if view.recovery is not None:
        msg.recovery.CopyFrom(recovery(view.recovery))
    return msg


def pin_states(views: tuple[PinView, ...]) -> list[pb.PinState]:
    return [pin_state(v) for v in views]
