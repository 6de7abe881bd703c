"""Commands: imperative, validated on construction. A command that exists
is well formed; a malformed one raises InvalidInput naming every bad field
(field names are the API's), and so costs no try."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from service.domain.card_ids import validate_card_id
from service.domain.errors import FieldViolation, InvalidInput
from service.domain.pins import PinType, normalize_pin
from service.domain.requests import validate_request_id


class _Collector:
    """Gathers the violations of several fields so a caller learns them all at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def run(self, check: Callable[[], object]) -> object:
        try:
            return check()
        except InvalidInput as exc:
            self.violations.extend(exc.violations)
            return None

    def require_pin_type(self, pin_type: PinType | None, field_name: str) -> PinType | None:
        if pin_type is None:
            self.violations.append(FieldViolation(field_name, "is required: one of the four PIN types"))
        return pin_type

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidInput(self.violations)


def _pin(c: _Collector, pin_type: PinType | None, raw: str, name: str) -> str:
    if pin_type is None:  # the format is unknown, but a missing PIN is still missing
        if not raw:
            c.violations.append(FieldViolation(name, "is required"))
        return raw
    return c.run(lambda: normalize_pin(pin_type, raw, name))  # type: ignore[return-value]


WARD_ID = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)


@dataclass(frozen=True)
class EnrollCard:
    request_id: str
    card_id: str
    pins: dict[PinType, str] = field(repr=False)
    ward: str | None = None  # the holder's ward (counters act only for wards they serve)

    @classmethod
    def create(
        cls, request_id: str, card_id: str, pins: list[tuple[PinType | None, str]], ward: str | None = None
    ) -> EnrollCard:
        c = _Collector()
        c.run(lambda: validate_request_id(request_id))
        c.run(lambda: validate_card_id(card_id))
        if ward is not None and not WARD_ID.fullmatch(ward):
            c.violations.append(FieldViolation("ward", "must be 1 to 32 of A-Z a-z 0-9 . _ -"))
        if not pins:
            c.violations.append(FieldViolation("pins", "at least one initial PIN is required"))
        normalized: dict[PinType, str] = {}
        for i, (pin_type, raw) in enumerate(pins):
            if c.require_pin_type(pin_type, f"pins[{i}].pin_type") is None:
                _pin(c, None, raw, f"pins[{i}].pin")
                continue
            if pin_type in normalized:
                c.violations.append(FieldViolation(f"pins[{i}].pin_type", f"{pin_type.value} is given twice"))
                continue
            normalized[pin_type] = _pin(c, pin_type, raw, f"pins[{i}].pin")
        c.raise_if_any()
        return cls(request_id, card_id, normalized, ward)


@dataclass(frozen=True)
class VerifyPin:
    request_id: str
    card_id: str
    pin_type: PinType
    pin: str = field(repr=False)

    @classmethod
    def create(cls, request_id: str, card_id: str, pin_type: PinType | None, pin: str) -> VerifyPin:
        c = _Collector()
        c.run(lambda: validate_request_id(request_id))
        c.run(lambda: validate_card_id(card_id))
        c.require_pin_type(pin_type, "pin_type")
        normalized = _pin(c, pin_type, pin, "pin")
        c.raise_if_any()
        return cls(request_id, card_id, pin_type, normalized)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChangePin:
    request_id: str
    card_id: str
    pin_type: PinType
    current_pin: str = field(repr=False)
    new_pin: str = field(repr=False)

    @classmethod
    def create(
        cls, request_id: str, card_id: str, pin_type: PinType | None, current_pin: str, new_pin: str
    ) -> ChangePin:
        c = _Collector()
        c.run(lambda: validate_request_id(request_id))
        c.run(lambda: validate_card_id(card_id))
        c.require_pin_type(pin_type, "pin_type")
        current = _pin(c, pin_type, current_pin, "current_pin")
        new = _pin(c, pin_type, new_pin, "new_pin")
        c.raise_if_any()
        return cls(request_id, card_id, pin_type, current, new)  # type: ignore[arg-type]


Command = EnrollCard | VerifyPin | ChangePin
