"""Answers: what a command returns, and their stored form for replays.

Each kind of outcome has one codec in CODECS. A replayed answer never
carries a secret: an inquiry's one-time code is given once and stored as a
keyed hash only, so its stored answer has no code.

A refusal the rules decided (and recorded) is a kept answer too: its error
in the same stored form (kind "refused", KEPT_REFUSALS), MACed like any
other, raised again to a retry with `replayed` set.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, overload

from ..domain.calendar import Opening
from ..domain.commands import CardCommand, CompleteProxyReset
from ..domain.errors import (
    AlreadyExists,
    DomainError,
    FieldViolation,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    PreconditionViolation,
)
from ..domain.outcomes import (
    CardStatusChanged,
    CheckOutcome,
    CheckResult,
    Enrolled,
    InquiryIssued,
    Outcome,
    PinRestored,
    ProxyCompletion,
    ProxyResult,
    StoreReservation,
    StoreReset,
)
from ..domain.pins import PinType, pin_type_order
from ..domain.recovery import PinView, Procedure, Recovery, Route
from ..domain.state import CardStatus, PinState

Out = TypeVar("Out", bound=Outcome, covariant=True)


@dataclass(frozen=True)
class Answer(Generic[Out]):
    """What a command answers: its outcome, the card's stream version after
    it, whether it is a replay of a kept answer, and the PINs it set afresh
    as the answer shows them (fresh_pins)."""

    outcome: Out
    stream_version: int
    replayed: bool = False
    pins: tuple[PinView, ...] = ()


def fresh_pins(cmd: CardCommand, outcome: Outcome, version: int) -> tuple[PinView, ...]:
    """The PINs a command set afresh (enrolled, reset, unlocked, a completed
    proxy reset): active, no failures, as of the answer's stream version. A
    replay shows them as the first answer did."""
    match outcome:
        case Enrolled():
            types: tuple[PinType, ...] = outcome.pin_types
        case PinRestored():
            types = (outcome.pin_type,)
        case ProxyCompletion(result=ProxyResult.COMPLETED) if isinstance(cmd, CompleteProxyReset):
            types = (cmd.pin_type,)
        case _:
            return ()
    return tuple(PinView(PinState(t, last_version=version)) for t in sorted(types, key=pin_type_order))


def command_name(cmd: CardCommand) -> str:
    return type(cmd).__name__


def fingerprint(cmd: CardCommand) -> str:
    """Identifies a request without its PINs: a reused request id with a
    different command, card or PIN type is refused rather than replayed."""
    pin_type = getattr(cmd, "pin_type", None)
    body = f"{command_name(cmd)}|{cmd.card_id}|{pin_type.value if pin_type else ''}"
    return hashlib.sha256(body.encode()).hexdigest()


def _time(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


@overload
def _parse(at: str) -> datetime: ...
@overload
def _parse(at: str | None) -> datetime | None: ...
def _parse(at: str | None) -> datetime | None:
    return None if at is None else datetime.fromisoformat(at)


def _recovery(r: Recovery | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "route": r.route.value,
        "description": r.description,
        "procedures": [p.value for p in r.procedures],
        "openings": [[o.office_id, o.name, o.at.isoformat()] for o in r.openings],
    }


def _recovery_back(d: dict[str, Any] | None) -> Recovery | None:
    if d is None:
        return None
    return Recovery(
        Route(d["route"]),
        d["description"],
        tuple(Procedure(p) for p in d.get("procedures", ())),
        tuple(Opening(o, n, datetime.fromisoformat(at)) for o, n, at in d.get("openings", ())),
    )


def _check(o: CheckOutcome) -> dict[str, Any]:
    return {
        "result": o.result.value,
        "remaining_tries": o.remaining_tries,
        "final_try": o.final_try,
        "retry_limit": o.retry_limit,
        "locked_now": o.locked_now,
        "recovery": _recovery(o.recovery),
    }


def _check_back(d: dict[str, Any]) -> CheckOutcome:
    return CheckOutcome(
        CheckResult(d["result"]),
        d["remaining_tries"],
        d["final_try"],
        d["retry_limit"],
        d["locked_now"],
        _recovery_back(d["recovery"]),
    )


@dataclass(frozen=True)
class Codec:
    """One kind of outcome in its stored form (its bytes are MACed: pinned by tests/store/test_mac_message.py)."""

    kind: str
    encode: Callable[[Any], dict[str, Any]]  # takes the codec's own outcome type (CODECS' key)
    decode: Callable[[dict[str, Any]], Outcome]


CODECS: dict[type[Outcome], Codec] = {
    Enrolled: Codec(
        "enrolled",
        lambda o: {"card_id": o.card_id, "pin_types": [t.value for t in o.pin_types]},
        lambda d: Enrolled(d["card_id"], tuple(PinType(t) for t in d["pin_types"])),
    ),
    CheckOutcome: Codec("check", _check, _check_back),
    PinRestored: Codec("restored", lambda o: {"pin_type": o.pin_type.value}, lambda d: PinRestored(PinType(d["pin_type"]))),
    InquiryIssued: Codec(
        "inquiry",
        lambda o: {"inquiry_id": o.inquiry_id, "expires_at": _time(o.expires_at)},  # never the code
        lambda d: InquiryIssued(d["inquiry_id"], _parse(d["expires_at"]), None),
    ),
    ProxyCompletion: Codec(
        "proxy",
        lambda o: {"result": o.result.value, "remaining_attempts": o.remaining_attempts},
        lambda d: ProxyCompletion(ProxyResult(d["result"]), d["remaining_attempts"]),
    ),
    CardStatusChanged: Codec(
        "card_status", lambda o: {"status": o.status.value}, lambda d: CardStatusChanged(CardStatus(d["status"]))
    ),
    StoreReservation: Codec(
        "reservation",
        lambda o: {
            "check": _check(o.check),
            "reservation_id": o.reservation_id,
            "expires_at": _time(o.expires_at),
            "proving_pin_type": o.proving_pin_type and o.proving_pin_type.value,
        },
        lambda d: StoreReservation(
            _check_back(d["check"]),
            d["reservation_id"],
            _parse(d["expires_at"]),
            d["proving_pin_type"] and PinType(d["proving_pin_type"]),
        ),
    ),
    StoreReset: Codec(
        "store_reset",
        lambda o: {"check": _check(o.check), "reset": o.reset},
        lambda d: StoreReset(_check_back(d["check"]), d["reset"]),
    ),
}
_BY_KIND = {c.kind: c for c in CODECS.values()}


def encode(outcome: Outcome) -> dict[str, Any]:
    codec = CODECS[type(outcome)]
    return {"kind": codec.kind, **codec.encode(outcome)}


def decode(data: dict[str, Any]) -> Outcome:
    return _BY_KIND[data["kind"]].decode(data)


# The refusals a decision may end in that are kept for their request id, by
# stored name: the error's class and the class of its violations (None: a
# message only). Others (throttling, capacity: nothing was decided, the
# answer depends on when it is asked) are never kept.
KEPT_REFUSALS: dict[str, tuple[type[DomainError], type[Any] | None]] = {
    "failed_precondition": (PreconditionFailed, PreconditionViolation),
    "invalid_argument": (InvalidInput, FieldViolation),
    "not_found": (NotFound, None),
    "already_exists": (AlreadyExists, None),
}
_REFUSAL_NAMES = {cls: name for name, (cls, _) in KEPT_REFUSALS.items()}
REFUSED = "refused"


def encode_refusal(error: DomainError) -> dict[str, Any] | None:
    """A refusal in its stored form, or None when it is not kept."""
    name = _REFUSAL_NAMES.get(type(error))
    if name is None:
        return None
    data: dict[str, Any] = {"kind": REFUSED, "error": name, "message": str(error)}
    if KEPT_REFUSALS[name][1] is not None:
        data["violations"] = [list(dataclasses.astuple(v)) for v in getattr(error, "violations", ())]
    return data


def decode_refusal(data: dict[str, Any]) -> DomainError | None:
    """The kept refusal, marked replayed (its message and details as first
    given, not rebuilt), or None when a success was kept."""
    if data.get("kind") != REFUSED:
        return None
    cls, violation = KEPT_REFUSALS[data["error"]]
    error = cls.__new__(cls)
    Exception.__init__(error, data["message"])
    if violation is not None:
        error.__dict__["violations"] = [violation(*v) for v in data["violations"]]
    error.replayed = True
    return error
