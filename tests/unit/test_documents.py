"""The counter checklists (DESIGN.md §2): what each applicant must present,
every gap named at once, and the 3-month validity of documents proving a
representative's authority."""

from __future__ import annotations

from datetime import date

import pytest

from pinlife.domain.documents import Applicant, Document, check_checklist, months_before
from pinlife.domain.documents import DocumentType as T

HOLDER, REPRESENTATIVE, PROXY = Applicant.HOLDER, Applicant.LEGAL_REPRESENTATIVE, Applicant.PROXY
TODAY = date(2026, 5, 20)

CARD = Document(T.MY_NUMBER_CARD)
PHOTO_ID = Document(T.PUBLIC_PHOTO_ID)
OTHER_ID = Document(T.OTHER_ID)


def family_register(issued_on=date(2026, 5, 1)) -> Document:
    return Document(T.FAMILY_REGISTER, issued_on)


def guardianship(issued_on=date(2026, 5, 1)) -> Document:
    return Document(T.ADULT_GUARDIANSHIP_CERTIFICATE, issued_on)


def problems(applicant, *documents, today=TODAY, **kw) -> list[tuple[str, str]]:
    """(type, subject) of each violation, in order."""
    return [(v.type, v.subject) for v in check_checklist(applicant, documents, today, **kw)]


MISSING, STALE = "DOCUMENT_MISSING", "DOCUMENT_STALE"


# --- the holder -------------------------------------------------------------


def test_the_holder_presents_the_card():
    assert problems(HOLDER, CARD) == []
    assert problems(HOLDER) == [(MISSING, "documents/my_number_card")]
    assert problems(HOLDER, PHOTO_ID) == [(MISSING, "documents/my_number_card")]


# --- a legal representative ----------------------------------------------------


def test_a_representative_with_everything():
    assert problems(REPRESENTATIVE, CARD, PHOTO_ID, OTHER_ID, family_register()) == []
    assert problems(REPRESENTATIVE, CARD, PHOTO_ID, PHOTO_ID, family_register()) == []
    certificate = Document(T.CERTIFICATE_OF_REGISTRATION, date(2026, 5, 1))
    assert problems(REPRESENTATIVE, CARD, PHOTO_ID, OTHER_ID, certificate) == []


def test_a_representative_with_nothing_is_told_every_missing_document_at_once():
    violations = check_checklist(REPRESENTATIVE, (), TODAY)
    assert [(v.type, v.subject) for v in violations] == [
        (MISSING, "documents/my_number_card"),
        (MISSING, "documents/ids"),
        (MISSING, "documents/public_photo_id"),
        (MISSING, "documents/authority"),
    ]
    assert "certificate_of_registration or family_register" in violations[-1].description


def test_a_representative_with_one_id_only():
    assert problems(REPRESENTATIVE, CARD, PHOTO_ID, family_register()) == [(MISSING, "documents/ids")]
    assert problems(REPRESENTATIVE, CARD, OTHER_ID, family_register()) == [
        (MISSING, "documents/ids"),
        (MISSING, "documents/public_photo_id"),
    ]


def test_a_representative_with_two_ids_but_no_public_photo_id():
    assert problems(REPRESENTATIVE, CARD, OTHER_ID, OTHER_ID, family_register()) == [(MISSING, "documents/public_photo_id")]


def test_the_holders_card_is_not_an_id_of_the_representative():
    assert problems(REPRESENTATIVE, CARD, CARD, PHOTO_ID, family_register()) == [(MISSING, "documents/ids")]


def test_an_adult_wards_guardian_needs_the_guardianship_certificate():
    ids = (CARD, PHOTO_ID, OTHER_ID)
    assert problems(REPRESENTATIVE, *ids, guardianship(), adult_ward=True) == []
    violations = check_checklist(REPRESENTATIVE, (*ids, family_register()), TODAY, adult_ward=True)
    assert [(v.type, v.subject) for v in violations] == [(MISSING, "documents/authority")]
    assert "adult_guardianship_certificate" in violations[0].description
    # ... and a minor's representative cannot use a guardianship certificate
    assert problems(REPRESENTATIVE, *ids, guardianship()) == [(MISSING, "documents/authority")]


# --- the 3-month validity of the authority document ----------------------------


@pytest.mark.parametrize(
    "issued_on, ok",
    [
        (TODAY, True),
        (date(2026, 2, 20), True),  # exactly 3 months before
        (date(2026, 2, 19), False),  # a day more
        (date(2025, 5, 20), False),
        (date(2026, 5, 21), False),  # issued in the future
        (None, False),  # no issue date: its age cannot be shown
    ],
)
def test_the_authority_document_must_be_issued_within_3_months(issued_on, ok):
    got = problems(REPRESENTATIVE, CARD, PHOTO_ID, OTHER_ID, family_register(issued_on))
    assert got == ([] if ok else [(STALE, "documents/authority")])


def test_the_stale_message_names_the_oldest_date_accepted():
    (violation,) = check_checklist(REPRESENTATIVE, (CARD, PHOTO_ID, OTHER_ID, family_register(date(2025, 1, 1))), TODAY)
    assert "2026-02-20" in violation.description


def test_a_fresh_authority_document_beside_a_stale_one_is_enough():
    documents = (CARD, PHOTO_ID, OTHER_ID, family_register(date(2025, 1, 1)), family_register(date(2026, 4, 1)))
    assert problems(REPRESENTATIVE, *documents) == []


def test_the_validity_is_counted_back_from_month_ends():
    # 31 May: three months back is the end of February.
    today = date(2026, 5, 31)
    ids = (CARD, PHOTO_ID, OTHER_ID)
    assert problems(REPRESENTATIVE, *ids, family_register(date(2026, 2, 28)), today=today) == []
    assert problems(REPRESENTATIVE, *ids, family_register(date(2026, 2, 27)), today=today) == [(STALE, "documents/authority")]


def test_stale_and_missing_are_reported_together():
    assert problems(REPRESENTATIVE, OTHER_ID, family_register(date(2020, 1, 1))) == [
        (MISSING, "documents/my_number_card"),
        (MISSING, "documents/ids"),
        (MISSING, "documents/public_photo_id"),
        (STALE, "documents/authority"),
    ]


@pytest.mark.parametrize(
    "day, months, expected",
    [
        (date(2026, 5, 31), 3, date(2026, 2, 28)),
        (date(2024, 5, 31), 3, date(2024, 2, 29)),  # leap year
        (date(2026, 7, 31), 1, date(2026, 6, 30)),
        (date(2026, 3, 31), 1, date(2026, 2, 28)),
        (date(2026, 5, 20), 3, date(2026, 2, 20)),
        (date(2026, 2, 15), 3, date(2025, 11, 15)),  # across a year
        (date(2026, 1, 31), 12, date(2025, 1, 31)),
        (date(2026, 1, 31), 0, date(2026, 1, 31)),
    ],
)
def test_months_before(day, months, expected):
    assert months_before(day, months) == expected


# --- a proxy's two visits -----------------------------------------------------------


def test_a_proxys_first_visit_needs_the_card_and_an_id():
    assert problems(PROXY, CARD, OTHER_ID, step="inquiry") == []
    assert problems(PROXY, CARD, PHOTO_ID, step="inquiry") == []
    assert problems(PROXY, step="inquiry") == [(MISSING, "documents/my_number_card"), (MISSING, "documents/ids")]


def test_a_proxys_second_visit_needs_the_card_the_forms_and_a_public_photo_id():
    complete = (CARD, Document(T.INQUIRY_FORM), Document(T.POWER_OF_ATTORNEY), PHOTO_ID)
    assert problems(PROXY, *complete, step="completion") == []
    assert problems(PROXY, step="completion") == [
        (MISSING, "documents/my_number_card"),
        (MISSING, "documents/inquiry_form"),
        (MISSING, "documents/power_of_attorney"),
        (MISSING, "documents/public_photo_id"),
    ]
    # another kind of ID is not enough at the second visit
    other = (CARD, Document(T.INQUIRY_FORM), Document(T.POWER_OF_ATTORNEY), OTHER_ID)
    assert problems(PROXY, *other, step="completion") == [(MISSING, "documents/public_photo_id")]
