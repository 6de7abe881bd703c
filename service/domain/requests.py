"""Client request ids: every mutating request carries one (DESIGN.md §4)."""

from __future__ import annotations

import re

from .errors import FieldViolation, InvalidInput

REQUEST_ID_PATTERN = re.compile(r"[\x21-\x7e]{8,128}", re.ASCII)


def validate_request_id(request_id: str, field: str = "request_id") -> str:
    if not request_id:
        raise InvalidInput(FieldViolation(field, "is required: a client-chosen unique id such as a UUID"))
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidInput(FieldViolation(field, "must be 8 to 128 printable ASCII characters without spaces"))
    return request_id
