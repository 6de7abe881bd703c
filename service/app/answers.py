"""Answers: what a command returns, and their stored form for replays.

Each kind of outcome has one codec in CODECS. A replayed answer never
carries a secret: an inquiry's one-time code is given once and stored as a
keyed hash only, so its stored answer has no code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload
from collections.abc import Callable

from service.domain.calendar import Opening
from service.domain.decision import CheckOutcome, CheckResult
from service.domain.decide import Enrolled
from service.domain.pins import PinType
from service.domain.procedures import (
    CardStatusChanged,
    InquiryIssued,
    PinRestored,
    ProxyCompletion,
    ProxyResult,
    Reservation,
    StoreReset,
)
from service.domain.recovery import Procedure, Recovery, Route
from service.domain.state import CardStatus


@dataclass(frozen=True)
class Answer:
    outcome: Any
    stream_version: int
    replayed: bool = False


def command_name(cmd: Any) -> str:
    return type(cmd).__name__


def fingerprint(cmd: Any) -> str:
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
    kind: str
    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[dict[str, Any]], Any]


CODECS: dict[type, Codec] = {
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
    Reservation: Codec(
        "reservation",
        lambda o: {
            "check": _check(o.check),
            "reservation_id": o.reservation_id,
            "expires_at": _time(o.expires_at),
            "proving_pin_type": o.proving_pin_type and o.proving_pin_type.value,
        },
        lambda d: Reservation(
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


def encode(outcome: Any) -> dict[str, Any]:
    codec = CODECS[type(outcome)]
    return {"kind": codec.kind, **codec.encode(outcome)}


def decode(data: dict[str, Any]) -> Any:
    return _BY_KIND[data["kind"]].decode(data)
