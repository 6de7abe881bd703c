"""Commands: imperative, validated on construction. A command that exists
is well formed; a malformed one raises InvalidInput naming every bad field
(field names are the API's), and so costs no try."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from .card_ids import validate_card_id
from .documents import CHECKLISTS, Applicant, Document, DocumentType
from .errors import FieldViolation, InvalidInput
from .events import CounterProcedure
from .pins import PinType, UnknownPinType, normalize_pin, pin_type_violation
from .requests import validate_request_id


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

    def require_pin_type(self, pin_type: PinType | UnknownPinType | None, field_name: str) -> PinType | None:
        """The PIN type, or None (a violation) if it is missing or unknown."""
        if isinstance(pin_type, PinType):
            return pin_type
        self.violations.append(pin_type_violation(field_name, pin_type))
        return None

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidInput(self.violations)


GivenPinType = PinType | UnknownPinType | None  # as the API gives it: refused unless a PinType
GivenDocuments = list[tuple[DocumentType | None, str]]  # (type or None for an unknown one, issue date "YYYY-MM-DD" or "")
T = TypeVar("T")


def _given(value: T | None) -> T:
    """A field validated above (raise_if_any has refused a missing one)."""
    if value is None:
        raise AssertionError("validated before construction")
    return value


def _pin(c: _Collector, pin_type: PinType | None, raw: str, name: str) -> str:
    if pin_type is None:  # the format is unknown, but a missing PIN is still missing
        if not raw:
            c.violations.append(FieldViolation(name, "is required"))
        return raw
    return c.run(lambda: normalize_pin(pin_type, raw, name))  # type: ignore[return-value]


WARD_ID = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)
MAX_PINS = len(PinType)  # EnrollCard: one PIN of each type at most


@dataclass(frozen=True)
class EnrollCard:
    request_id: str
    card_id: str
    pins: dict[PinType, str] = field(repr=False)
    ward: str | None = None  # the holder's ward (counters act only for wards they serve)
    office_id: str | None = None  # the counter's office (decide.py gates it)

    @classmethod
    def create(
        cls,
        request_id: str,
        card_id: str,
        pins: list[tuple[PinType | UnknownPinType | None, str]],
        ward: str | None = None,
        office_id: str | None = None,
    ) -> EnrollCard:
        c = _Collector()
        c.run(lambda: validate_request_id(request_id))
        c.run(lambda: validate_card_id(card_id))
        if ward is not None and not WARD_ID.fullmatch(ward):
            c.violations.append(FieldViolation("ward", "must be 1 to 32 of A-Z a-z 0-9 . _ -"))
        if not pins:
            c.violations.append(FieldViolation("pins", "at least one initial PIN is required"))
        if len(pins) > MAX_PINS:  # one violation, not one per PIN
            c.violations.append(FieldViolation("pins", f"at most {MAX_PINS} PINs: one of each PIN type"))
            pins = []
        normalized: dict[PinType, str] = {}
        for i, (given, raw) in enumerate(pins):
            pin_type = c.require_pin_type(given, f"pins[{i}].pin_type")
            if pin_type is None:
                _pin(c, None, raw, f"pins[{i}].pin")
                continue
            if pin_type in normalized:
                c.violations.append(FieldViolation(f"pins[{i}].pin_type", f"{pin_type.value} is given twice"))
                continue
            normalized[pin_type] = _pin(c, pin_type, raw, f"pins[{i}].pin")
        c.raise_if_any()
        return cls(request_id, card_id, normalized, ward, office_id)


@dataclass(frozen=True)
class VerifyPin:
    request_id: str
    card_id: str
    pin_type: PinType
    pin: str = field(repr=False)
    office_id: str | None = None  # a counter verifying at the desk (decide.py gates it)

    @classmethod
    def create(
        cls, request_id: str, card_id: str, pin_type: PinType | UnknownPinType | None, pin: str, office_id: str | None = None
    ) -> VerifyPin:
        c = _Collector()
        c.run(lambda: validate_request_id(request_id))
        c.run(lambda: validate_card_id(card_id))
        pin_type = c.require_pin_type(pin_type, "pin_type")
        normalized = _pin(c, pin_type, pin, "pin")
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), normalized, office_id)


@dataclass(frozen=True)
class ChangePin:
    request_id: str
    card_id: str
    pin_type: PinType
    current_pin: str = field(repr=False)
    new_pin: str = field(repr=False)
    office_id: str | None = None  # a counter assisting the holder (decide.py gates it)

    @classmethod
    def create(
        cls,
        request_id: str,
        card_id: str,
        pin_type: PinType | UnknownPinType | None,
        current_pin: str,
        new_pin: str,
        office_id: str | None = None,
    ) -> ChangePin:
        c = _Collector()
        c.run(lambda: validate_request_id(request_id))
        c.run(lambda: validate_card_id(card_id))
        pin_type = c.require_pin_type(pin_type, "pin_type")
        current = _pin(c, pin_type, current_pin, "current_pin")
        new = _pin(c, pin_type, new_pin, "new_pin")
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), current, new, office_id)


# -- reset procedures (DESIGN.md §2) ------------------------------------------
ISSUE_DATE_FIELD = "documents[{i}].issued_on"
INQUIRY_ID = re.compile(r"[A-Za-z0-9-]{8,64}", re.ASCII)
INQUIRY_CODE = re.compile(r"[0-9]{8}", re.ASCII)
MAX_DOCUMENTS = 16


def _documents(c: _Collector, documents: list[tuple[DocumentType | None, str]]) -> tuple[Document, ...]:
    """Documents as (type, issue date "YYYY-MM-DD" or ""), validated."""
    if len(documents) > MAX_DOCUMENTS:
        c.violations.append(FieldViolation("documents", f"at most {MAX_DOCUMENTS} documents"))
        return ()
    out = []
    for i, (doc_type, issued) in enumerate(documents):
        if doc_type is None:
            c.violations.append(FieldViolation(f"documents[{i}].type", "is required: one of the document types"))
            continue
        issued_on = None
        if issued:
            try:
                issued_on = date.fromisoformat(issued)
            except ValueError:
                c.violations.append(FieldViolation(ISSUE_DATE_FIELD.format(i=i), "must be a date YYYY-MM-DD"))
        out.append(Document(doc_type, issued_on))
    return tuple(out)


def _applicant(c: _Collector, applicant: Applicant | None, allowed: tuple[Applicant, ...]) -> Applicant | None:
    if applicant not in allowed:
        names = ", ".join(a.value for a in allowed)
        c.violations.append(FieldViolation("applicant", f"is required: one of {names}"))
    return applicant


def _base(c: _Collector, request_id: str, card_id: str) -> None:
    c.run(lambda: validate_request_id(request_id))
    c.run(lambda: validate_card_id(card_id))


@dataclass(frozen=True)
class ResetPin:
    """At a counter: set a new PIN and unlock (holder or legal representative)."""

    request_id: str
    card_id: str
    pin_type: PinType
    new_pin: str = field(repr=False)
    applicant: Applicant
    documents: tuple[Document, ...]
    adult_ward: bool
    office_id: str | None

    @classmethod
    def create(
        cls,
        request_id: str,
        card_id: str,
        pin_type: GivenPinType,
        new_pin: str,
        applicant: Applicant | None,
        documents: GivenDocuments,
        adult_ward: bool,
        office_id: str | None,
    ) -> ResetPin:
        c = _Collector()
        _base(c, request_id, card_id)
        pin_type = c.require_pin_type(pin_type, "pin_type")
        pin = _pin(c, pin_type, new_pin, "new_pin")
        _applicant(c, applicant, CHECKLISTS[CounterProcedure.RESET].applicants)
        docs = _documents(c, documents)
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), pin, _given(applicant), docs, adult_ward, office_id)


@dataclass(frozen=True)
class UnlockPin:
    """At a counter: clear the failure count and keep the PIN."""

    request_id: str
    card_id: str
    pin_type: PinType
    applicant: Applicant
    documents: tuple[Document, ...]
    adult_ward: bool
    office_id: str | None

    @classmethod
    def create(
        cls,
        request_id: str,
        card_id: str,
        pin_type: GivenPinType,
        applicant: Applicant | None,
        documents: GivenDocuments,
        adult_ward: bool,
        office_id: str | None,
    ) -> UnlockPin:
        c = _Collector()
        _base(c, request_id, card_id)
        pin_type = c.require_pin_type(pin_type, "pin_type")
        _applicant(c, applicant, CHECKLISTS[CounterProcedure.UNLOCK].applicants)
        docs = _documents(c, documents)
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), _given(applicant), docs, adult_ward, office_id)


@dataclass(frozen=True)
class RequestProxyReset:
    """A proxy's first visit: issue an inquiry (id, one-time code, expiry)."""

    request_id: str
    card_id: str
    pin_type: PinType
    documents: tuple[Document, ...]
    office_id: str | None

    @classmethod
    def create(
        cls, request_id: str, card_id: str, pin_type: GivenPinType, documents: GivenDocuments, office_id: str | None
    ) -> RequestProxyReset:
        c = _Collector()
        _base(c, request_id, card_id)
        pin_type = c.require_pin_type(pin_type, "pin_type")
        docs = _documents(c, documents)
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), docs, office_id)


@dataclass(frozen=True)
class CompleteProxyReset:
    """A proxy's second visit: the inquiry's id and code, and the new PIN."""

    request_id: str
    card_id: str
    pin_type: PinType
    inquiry_id: str
    code: str = field(repr=False)
    new_pin: str = field(repr=False)
    documents: tuple[Document, ...] = ()
    office_id: str | None = None

    @classmethod
    def create(
        cls,
        request_id: str,
        card_id: str,
        pin_type: GivenPinType,
        inquiry_id: str,
        code: str,
        new_pin: str,
        documents: GivenDocuments,
        office_id: str | None,
    ) -> CompleteProxyReset:
        c = _Collector()
        _base(c, request_id, card_id)
        pin_type = c.require_pin_type(pin_type, "pin_type")
        if not INQUIRY_ID.fullmatch(inquiry_id or ""):
            c.violations.append(FieldViolation("inquiry_id", "is required: the id printed on the inquiry form"))
        if not INQUIRY_CODE.fullmatch(code or ""):
            c.violations.append(FieldViolation("code", "must be the 8-digit code printed on the inquiry form"))
        pin = _pin(c, pin_type, new_pin, "new_pin")
        docs = _documents(c, documents)
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), inquiry_id, code, pin, docs, office_id)


SUSPEND_REASONS = ("lost", "stolen", "other")


@dataclass(frozen=True)
class SuspendCard:
    request_id: str
    card_id: str
    reason: str
    office_id: str | None  # None: the lost-card call centre (around the clock)

    @classmethod
    def create(cls, request_id: str, card_id: str, reason: str | None, office_id: str | None) -> SuspendCard:
        c = _Collector()
        _base(c, request_id, card_id)
        if reason not in SUSPEND_REASONS:
            c.violations.append(FieldViolation("reason", f"is required: one of {', '.join(SUSPEND_REASONS)}"))
        c.raise_if_any()
        return cls(request_id, card_id, _given(reason), office_id)


@dataclass(frozen=True)
class ResumeCard:
    request_id: str
    card_id: str
    applicant: Applicant
    documents: tuple[Document, ...]
    adult_ward: bool
    office_id: str | None

    @classmethod
    def create(
        cls,
        request_id: str,
        card_id: str,
        applicant: Applicant | None,
        documents: GivenDocuments,
        adult_ward: bool,
        office_id: str | None,
    ) -> ResumeCard:
        c = _Collector()
        _base(c, request_id, card_id)
        _applicant(c, applicant, CHECKLISTS[CounterProcedure.RESUME].applicants)
        docs = _documents(c, documents)
        c.raise_if_any()
        return cls(request_id, card_id, _given(applicant), docs, adult_ward, office_id)


@dataclass(frozen=True)
class ReserveStoreReset:
    """In the reset app: reserve a store reset of `pin_type`, proving the other certificate's PIN."""

    request_id: str
    card_id: str
    pin_type: PinType
    proving_pin: str = field(repr=False)

    @classmethod
    def create(cls, request_id: str, card_id: str, pin_type: GivenPinType, proving_pin: str) -> ReserveStoreReset:
        c = _Collector()
        _base(c, request_id, card_id)
        pin_type = c.require_pin_type(pin_type, "pin_type")
        if not proving_pin:
            c.violations.append(FieldViolation("proving_pin", "is required"))
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), proving_pin)


@dataclass(frozen=True)
class StoreResetPin:
    """At a kiosk: prove the same PIN again and set the new one (unlocks)."""

    request_id: str
    card_id: str
    pin_type: PinType
    proving_pin: str = field(repr=False)
    new_pin: str = field(repr=False)
    chain_id: str | None = None

    @classmethod
    def create(
        cls, request_id: str, card_id: str, pin_type: GivenPinType, proving_pin: str, new_pin: str, chain_id: str | None
    ) -> StoreResetPin:
        c = _Collector()
        _base(c, request_id, card_id)
        pin_type = c.require_pin_type(pin_type, "pin_type")
        if not proving_pin:
            c.violations.append(FieldViolation("proving_pin", "is required"))
        pin = _pin(c, pin_type, new_pin, "new_pin")
        c.raise_if_any()
        return cls(request_id, card_id, _given(pin_type), proving_pin, pin, chain_id)


CardCommand = (
    EnrollCard
    | VerifyPin
    | ChangePin
    | ResetPin
    | UnlockPin
    | RequestProxyReset
    | CompleteProxyReset
    | SuspendCard
    | ResumeCard
    | ReserveStoreReset
    | StoreResetPin
)
