"""PIN types, their formats and retry limits (DESIGN.md §2).

| PIN type                 | format                                   | limit |
| resident registry        | exactly 4 digits                         | 3     |
| card-info input support  | exactly 4 digits                         | 3     |
| user certificate         | exactly 4 digits                         | 3     |
| signature certificate    | 6-16 of A-Z 0-9, >=1 letter, >=1 digit   | 5     |

Lower-case letters of a signature PIN are taken as upper-case. Only ASCII is
accepted: full-width digits and other scripts are malformed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import FieldViolation, InvalidInput


class PinType(enum.Enum):
    RESIDENT_REGISTRY = "resident_registry"
    CARD_INFO_INPUT_SUPPORT = "card_info_input_support"
    USER_CERTIFICATE = "user_certificate"
    SIGNATURE = "signature"

    # Members are singletons compared by identity: hash them by identity too,
    # in C, instead of Enum's Python-level hash of the name (PIN types key the
    # state's dicts on the write path).
    __hash__ = object.__hash__


PIN_TYPE_BY_VALUE: dict[str, PinType] = {t.value: t for t in PinType}  # faster than PinType(value)
_DECLARED = {t: i for i, t in enumerate(PinType)}


def pin_type_order(pin_type: PinType) -> int:
    """A sort key: PIN types in their declared order (an answer lists a card's PINs so)."""
    return _DECLARED[pin_type]


@dataclass(frozen=True)
class UnknownPinType:
    """A PIN type the caller sent that is none of ours (an API enum value no
    PinType maps to): refused by the command as a field violation."""

    value: object


def pin_type_violation(field: str, given: UnknownPinType | None) -> FieldViolation:
    """The one message for a missing or unknown PIN type, on every RPC."""
    if given is None:
        return FieldViolation(field, "is required: one of the four PIN types")
    return FieldViolation(field, f"is not a known PIN type ({given.value}): one of the four PIN types")


@dataclass(frozen=True)
class PinRule:
    retry_limit: int
    description: str
    pattern: re.Pattern[str]
    upper_case: bool = False

    def normalize(self, raw: str) -> str | None:
        """The PIN as checked, or None if malformed."""
        pin = raw.upper() if self.upper_case and raw.isascii() else raw
        return pin if self.pattern.fullmatch(pin) else None


_FOUR_DIGITS = PinRule(3, "exactly 4 digits (0-9)", re.compile(r"[0-9]{4}", re.ASCII))
_SIGNATURE = PinRule(
    5,
    "6 to 16 characters of A-Z and 0-9 with at least one letter and one digit",
    re.compile(r"(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{6,16}", re.ASCII),
    upper_case=True,
)

PIN_RULES: dict[PinType, PinRule] = {
    PinType.RESIDENT_REGISTRY: _FOUR_DIGITS,
    PinType.CARD_INFO_INPUT_SUPPORT: _FOUR_DIGITS,
    PinType.USER_CERTIFICATE: _FOUR_DIGITS,
    PinType.SIGNATURE: _SIGNATURE,
}


def retry_limit(pin_type: PinType) -> int:
    return PIN_RULES[pin_type].retry_limit


def normalize_pin(pin_type: PinType, raw: str, field: str) -> str:
    """The PIN as it is checked and stored; InvalidInput (costing no try) if
    malformed. The message names the expected format, never the value."""
    if not isinstance(raw, str) or not raw:
        raise InvalidInput(FieldViolation(field, "is required"))
    pin = PIN_RULES[pin_type].normalize(raw)
    if pin is None:
        raise InvalidInput(FieldViolation(field, f"a {pin_type.value} PIN must be {PIN_RULES[pin_type].description}"))
    return pin
