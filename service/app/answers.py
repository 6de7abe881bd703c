"""Answers: what a command returns, and their stored form for replays."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from service.domain.commands import Command
from service.domain.decide import CheckOutcome, CheckResult, Enrolled, Outcome
from service.domain.pins import PinType
from service.domain.recovery import Recovery, Route


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    stream_version: int
    replayed: bool = False


def command_name(cmd: Command) -> str:
    return type(cmd).__name__


def fingerprint(cmd: Command) -> str:
    """Identifies a request without its PINs: a reused request id with a
    different command, card or PIN type is refused rather than replayed."""
    pin_type = getattr(cmd, "pin_type", None)
    body = f"{command_name(cmd)}|{cmd.card_id}|{pin_type.value if pin_type else ''}"
    return hashlib.sha256(body.encode()).hexdigest()


def encode(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Enrolled):
        return {"kind": "enrolled", "card_id": outcome.card_id, "pin_types": [t.value for t in outcome.pin_types]}
    return {
        "kind": "check",
        "result": outcome.result.value,
        "remaining_tries": outcome.remaining_tries,
        "final_try": outcome.final_try,
        "retry_limit": outcome.retry_limit,
        "locked_now": outcome.locked_now,
        "recovery": None
        if outcome.recovery is None
        else {"route": outcome.recovery.route.value, "description": outcome.recovery.description},
    }


def decode(data: dict[str, Any]) -> Outcome:
    if data["kind"] == "enrolled":
        return Enrolled(data["card_id"], tuple(PinType(t) for t in data["pin_types"]))
    rec = data["recovery"]
    return CheckOutcome(
        CheckResult(data["result"]),
        data["remaining_tries"],
        data["final_try"],
        data["retry_limit"],
        data["locked_now"],
        None if rec is None else Recovery(Route(rec["route"]), rec["description"]),
    )

