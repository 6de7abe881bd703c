"""Events evolve without rewriting the log: a stored event keeps the shape
and schema version it was written with, and is upgraded to the current
event class when read, on every read path (state loads, rebuild, integrity,
audit). One upcaster per (event type, old schema version) turns a payload
into the next version's; they chain up to the class's `schema_version`.

A field typed with a vocabulary of stored words (events.py: `RefusalReason
| str`, ...) is read as the member its word names; a word this release does
not know is read as the string stored, never a crash: the lawful check
reports it (lawful.py), readers show it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import fields
from typing import Any, get_args, get_type_hints

from .events import EVENT_TYPES, CounterProcedureRefused, Event, Purpose, RepeatsCounted, known_word
from .pins import PinType

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UnknownEventShape(Exception):
    """A stored event this code cannot read: an unknown type, or a schema
    version newer than its class (written by a newer release)."""


def _card_enrolled_v1_to_v2(payload: Payload) -> Payload:
    return {**payload, "ward": None}  # cards enrolled before wards were recorded have none


def _access_denied_v1_to_v2(payload: Payload) -> Payload:
    return {**payload, "repeated": 0}  # v1 recorded every refusal on its own


def _code_rejected_v1_to_v2(payload: Payload) -> Payload:
    return {**payload, "wrong_codes_today": 0}  # recorded before wrong codes were counted per card and day


def _counted_v1_to_v2(payload: Payload) -> Payload:
    """v2 of an aggregated event (repeats.py) added `repeated`; v1 recorded
    every occurrence on its own. (CounterProcedureRefused v2 also records
    its PIN type, in the envelope's column: a v1 one has none, read as None.)"""
    return {**payload, "repeated": 0}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("CardEnrolled", 1): _card_enrolled_v1_to_v2,
    ("AccessDenied", 1): _access_denied_v1_to_v2,
    ("ProxyInquiryCodeRejected", 1): _code_rejected_v1_to_v2,
    **{
        (name, 1): _counted_v1_to_v2
        for name in (
            "LockedPinAttempted",
            "SuspendedCardAttempted",
            "CounterProcedureRefused",
            "ResetRefused",
            "CounterOutOfService",
            "AuditRead",
        )
    },
}


def upcast(type_name: str, schema_version: int, payload: Payload) -> Payload:
    """The payload in the current schema version of its event type."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventShape(f"unknown event type {type_name!r}")
    if schema_version > cls.schema_version:
        raise UnknownEventShape(f"{type_name} v{schema_version} is newer than this release's v{cls.schema_version}")
    while schema_version < cls.schema_version:
        step = UPCASTERS.get((type_name, schema_version))
        if step is None:
            raise UnknownEventShape(f"no upcaster for {type_name} v{schema_version}")
        payload = step(payload)
        schema_version += 1
    return payload


# Event types whose PIN type may be absent (CounterProcedureRefused: ResumeCard's, and every v1 one).
_PIN_TYPE_OPTIONAL = frozenset({CounterProcedureRefused, RepeatsCounted})

# (field name, the StrEnum of its stored word or None) of each event class
_FIELDS: dict[type[Event], tuple[tuple[str, type[enum.StrEnum] | None], ...]] = {}


def _fields(cls: type[Event]) -> tuple[tuple[str, type[enum.StrEnum] | None], ...]:
    found = _FIELDS.get(cls)
    if found is None:
        hints = get_type_hints(cls)
        found = _FIELDS[cls] = tuple((f.name, _word_enum(hints[f.name])) for f in fields(cls))
    return found


def _word_enum(hint: Any) -> type[enum.StrEnum] | None:
    """The StrEnum a field's annotation names (`RefusalReason | str`), if any."""
    for t in get_args(hint) or (hint,):
        if isinstance(t, type) and issubclass(t, enum.StrEnum):
            return t
    return None


def event_from_stored(type_name: str, schema_version: int, pin_type: str | None, payload: Payload) -> Event:
    """The current domain event for a stored one (type, schema version, the
    PIN type column, the JSON payload)."""
    payload = upcast(type_name, schema_version, payload)
    cls = EVENT_TYPES[type_name]
    kwargs: dict[str, Any] = {}
    for name, vocabulary in _fields(cls):
        if name == "pin_type":
            if pin_type is None and cls not in _PIN_TYPE_OPTIONAL:
                raise ValueError(f"{type_name} records a PIN type; the stored event has none")
            kwargs["pin_type"] = None if pin_type is None else PinType(pin_type)
        elif name == "pin_types":
            kwargs["pin_types"] = tuple(PinType(v) for v in payload["pin_types"])
        elif name == "purpose":
            kwargs["purpose"] = Purpose(payload["purpose"])
        elif vocabulary is not None:
            value = payload[name]  # a word this release does not know stays as stored (the lawful check reports it)
            kwargs[name] = value if (word := known_word(vocabulary, value)) is None else word
        else:
            value = payload[name]
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)
