"""What must be presented at a counter (DESIGN.md §2), and the check of a
presented checklist. The service records document types (and, for documents
proving authority, the issue date), never names, numbers or copies.

| who applies | what | for |
|---|---|---|
| the holder | the holder's My Number Card | reset, unlock, resume |
| a legal representative | the holder's card; two IDs of the representative, at least one a photo ID issued by a public office; a document proving the authority issued within 3 months (family register or certificate of registration; for an adult ward's guardian, the adult-guardianship registration certificate) | reset, unlock, resume |
| a proxy, first visit | the holder's card; the proxy's ID | an inquiry |
| a proxy, second visit | the holder's card; the filled inquiry form; the power of attorney; the proxy's photo ID issued by a public office | reset |

A representative's own My Number Card is recorded as a public photo ID.
CHECKLISTS is this table by counter procedure: who may apply, and which
checklist (check_checklist's step) they present.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from .errors import PreconditionViolation
from .events import CounterProcedure


class DocumentType(enum.Enum):
    MY_NUMBER_CARD = "my_number_card"  # the holder's card
    PUBLIC_PHOTO_ID = "public_photo_id"  # a photo ID issued by a public office
    OTHER_ID = "other_id"
    FAMILY_REGISTER = "family_register"
    CERTIFICATE_OF_REGISTRATION = "certificate_of_registration"
    ADULT_GUARDIANSHIP_CERTIFICATE = "adult_guardianship_certificate"
    INQUIRY_FORM = "inquiry_form"
    POWER_OF_ATTORNEY = "power_of_attorney"


AUTHORITY_DOCUMENTS = frozenset(
    {DocumentType.FAMILY_REGISTER, DocumentType.CERTIFICATE_OF_REGISTRATION, DocumentType.ADULT_GUARDIANSHIP_CERTIFICATE}
)
IDS = frozenset({DocumentType.PUBLIC_PHOTO_ID, DocumentType.OTHER_ID})
AUTHORITY_VALID_MONTHS = 3


class Applicant(enum.Enum):
    HOLDER = "holder"
    LEGAL_REPRESENTATIVE = "legal_representative"  # of a holder under 15 or of an adult ward
    PROXY = "proxy"  # the two-visit inquiry procedure


HOLDER_OR_REPRESENTATIVE = (Applicant.HOLDER, Applicant.LEGAL_REPRESENTATIVE)


class Checklist(NamedTuple):
    applicants: tuple[Applicant, ...]  # who may apply
    step: str  # check_checklist's step


CHECKLISTS: dict[CounterProcedure, Checklist] = {
    CounterProcedure.RESET: Checklist(HOLDER_OR_REPRESENTATIVE, "reset"),
    CounterProcedure.UNLOCK: Checklist(HOLDER_OR_REPRESENTATIVE, "reset"),
    CounterProcedure.RESUME: Checklist(HOLDER_OR_REPRESENTATIVE, "reset"),
    CounterProcedure.PROXY_INQUIRY: Checklist((Applicant.PROXY,), "inquiry"),
    CounterProcedure.PROXY_COMPLETION: Checklist((Applicant.PROXY,), "completion"),
}


@dataclass(frozen=True)
class Document:
    type: DocumentType
    issued_on: date | None = None  # required for documents proving authority


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (clamped to the month's end)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    month += 1
    for d in (day.day, 30, 29, 28):
        try:
            return date(year, month, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _missing(what: str, description: str) -> PreconditionViolation:
    return PreconditionViolation("DOCUMENT_MISSING", f"documents/{what}", description)


def check_checklist(
    applicant: Applicant, documents: tuple[Document, ...], today: date, *, adult_ward: bool = False, step: str = "reset"
) -> list[PreconditionViolation]:
    """Every missing or stale document at once (empty: complete).
    step: "reset" (reset, unlock, resume), "inquiry" (a proxy's first
    visit) or "completion" (a proxy's second visit)."""
    have = [d.type for d in documents]
    out: list[PreconditionViolation] = []
    if DocumentType.MY_NUMBER_CARD not in have:
        out.append(_missing("my_number_card", "the holder's My Number Card is required"))
    if applicant is Applicant.LEGAL_REPRESENTATIVE:
        ids = [t for t in have if t in IDS]
        if len(ids) < 2:
            out.append(_missing("ids", "two identification documents of the representative are required"))
        if DocumentType.PUBLIC_PHOTO_ID not in ids:
            out.append(_missing("public_photo_id", "one ID of the representative must be a photo ID issued by a public office"))
        wanted = (
            {DocumentType.ADULT_GUARDIANSHIP_CERTIFICATE}
            if adult_ward
            else {DocumentType.FAMILY_REGISTER, DocumentType.CERTIFICATE_OF_REGISTRATION}
        )
        authority = [d for d in documents if d.type in wanted]
        if not authority:
            names = " or ".join(sorted(t.value for t in wanted))
            out.append(_missing("authority", f"a document proving the authority is required: {names}"))
        else:
            oldest_valid = months_before(today, AUTHORITY_VALID_MONTHS)
            if not any(d.issued_on is not None and oldest_valid <= d.issued_on <= today for d in authority):
                out.append(
                    PreconditionViolation(
                        "DOCUMENT_STALE",
                        "documents/authority",
                        f"the document proving the authority must have been issued within the last "
                        f"{AUTHORITY_VALID_MONTHS} months (on or after {oldest_valid.isoformat()})",
                    )
                )
    elif applicant is Applicant.PROXY:
        if step == "inquiry":
            if not any(t in IDS for t in have):
                out.append(_missing("ids", "the proxy's identification document is required"))
        else:
            if DocumentType.INQUIRY_FORM not in have:
                out.append(_missing("inquiry_form", "the filled inquiry form is required"))
            if DocumentType.POWER_OF_ATTORNEY not in have:
                out.append(_missing("power_of_attorney", "the power of attorney is required"))
            if DocumentType.PUBLIC_PHOTO_ID not in have:
                out.append(_missing("public_photo_id", "the proxy's photo ID issued by a public office is required"))
    return out
