"""Card ids are opaque; the service must never key on the Individual Number
(DESIGN.md §5). A 12-digit id with a valid My Number check digit is refused."""

from __future__ import annotations

import re

from .errors import FieldViolation, InvalidInput

CARD_ID_MAX_LENGTH = 64
CARD_ID_PATTERN = re.compile(rf"[A-Za-z0-9._-]{{1,{CARD_ID_MAX_LENGTH}}}", re.ASCII)


def my_number_check_digit(first11: str) -> int:
    """Check digit of an Individual Number (総務省令 check digit rule):
    weights 2..7,2..6 from the right over the first 11 digits, mod 11."""
    total = 0
    for n, ch in enumerate(reversed(first11), start=1):
        weight = n + 1 if n <= 6 else n - 5
        total += int(ch) * weight
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def looks_like_individual_number(value: str) -> bool:
    return len(value) == 12 and value.isascii() and value.isdigit() and my_number_check_digit(value[:11]) == int(value[11])


def validate_card_id(card_id: str, field: str = "card_id") -> str:
    if not card_id:
        raise InvalidInput(FieldViolation(field, "is required"))
    if not CARD_ID_PATTERN.fullmatch(card_id):
        raise InvalidInput(FieldViolation(field, "must be 1 to 64 characters of A-Z a-z 0-9 . _ -"))
    if looks_like_individual_number(card_id):
        raise InvalidInput(FieldViolation(field, "looks like an Individual Number (My Number); use the opaque card id"))
    return card_id
