"""Card ids are opaque; an id that looks like an Individual Number is refused
(DESIGN.md §5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlife.domain.card_ids import (
    looks_like_individual_number,
    my_number_check_digit,
    validate_card_id,
)
from pinlife.domain.errors import InvalidInput


def reference_check_digit(first11: str) -> int:
    """The official rule, written out separately from the code under test:
    P_n is the n-th digit counted from the right of the first 11 digits,
    Q_n = n + 1 for 1 <= n <= 6 and n - 5 for 7 <= n <= 11;
    check = 11 - (sum P_n * Q_n mod 11), or 0 if the remainder is 0 or 1."""
    assert len(first11) == 11
    q = {n: (n + 1 if n <= 6 else n - 5) for n in range(1, 12)}
    p = {n: int(first11[11 - n]) for n in range(1, 12)}
    remainder = sum(p[n] * q[n] for n in range(1, 12)) % 11
    return 0 if remainder in (0, 1) else 11 - remainder


# Worked by hand from the rule above.
#
# 12345678901: P1..P11 = 1,0,9,8,7,6,5,4,3,2,1; Q = 2,3,4,5,6,7,2,3,4,5,6
#   2 + 0 + 36 + 40 + 42 + 42 + 10 + 12 + 12 + 10 + 6 = 212; 212 mod 11 = 3 -> 8
# 00000000000: sum 0, remainder 0 -> 0
# 00000000001: P1 = 1, Q1 = 2: sum 2 -> 11 - 2 = 9
# 00000000006: P1 = 6, Q1 = 2: sum 12, remainder 1 -> 0
# 10000000000: P11 = 1, Q11 = 6: sum 6 -> 5
# 00001000000: P7 = 1, Q7 = 2: sum 2 -> 9
# 99999999999: 9 * (2+3+4+5+6+7+2+3+4+5+6) = 9 * 47 = 423; 423 mod 11 = 5 -> 6
WORKED_EXAMPLES = [
    ("12345678901", 8),
    ("00000000000", 0),
    ("00000000001", 9),
    ("00000000006", 0),
    ("10000000000", 5),
    ("00001000000", 9),
    ("99999999999", 6),
]


@pytest.mark.parametrize("first11, check", WORKED_EXAMPLES)
def test_check_digit_matches_worked_examples(first11, check):
    assert reference_check_digit(first11) == check
    assert my_number_check_digit(first11) == check


@settings(max_examples=200, deadline=None)
@given(first11=st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_check_digit_matches_the_reference(first11):
    assert my_number_check_digit(first11) == reference_check_digit(first11)


@pytest.mark.parametrize(
    "card_id",
    ["c", "card-0001", "A1B2.c3_d4-E5", "x" * 64, "0f8fad5b-d9cb-469f-a165-70867728950e", "12345", "1234567890123"],
)
def test_opaque_card_ids_are_accepted(card_id):
    assert validate_card_id(card_id) == card_id


@pytest.mark.parametrize(
    "card_id",
    [
        "",
        None,
        "x" * 65,
        "card 0001",
        " card",
        "card\n",
        "カード0001",
        "card-０００１",
        "café",
        "card/0001",
        "card:1",
    ],
)
def test_malformed_card_ids_are_rejected(card_id):
    with pytest.raises(InvalidInput) as info:
        validate_card_id(card_id)
    assert [v.field for v in info.value.violations] == ["card_id"]


@pytest.mark.parametrize("first11, check", WORKED_EXAMPLES)
def test_a_valid_individual_number_is_refused(first11, check):
    number = first11 + str(check)
    assert looks_like_individual_number(number)
    with pytest.raises(InvalidInput) as info:
        validate_card_id(number)
    assert [v.field for v in info.value.violations] == ["card_id"]
    assert "Individual Number" in info.value.violations[0].description
    assert number not in str(info.value)  # never echo it back


@pytest.mark.parametrize("first11, check", WORKED_EXAMPLES)
def test_twelve_digits_with_a_wrong_check_digit_are_accepted(first11, check):
    number = first11 + str((check + 1) % 10)
    assert not looks_like_individual_number(number)
    assert validate_card_id(number) == number


def test_the_field_name_is_passed_through():
    with pytest.raises(InvalidInput) as info:
        validate_card_id("123456789018", field="holder.card_id")
    assert [v.field for v in info.value.violations] == ["holder.card_id"]


def test_full_width_twelve_digits_are_rejected_as_malformed_not_as_my_number():
    with pytest.raises(InvalidInput) as info:
        validate_card_id("１２３４５６７８９０１８")
    assert "Individual Number" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(first11=st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_for_any_eleven_digits_exactly_one_final_digit_is_refused(first11):
    refused = []
    for last in "0123456789":
        try:
            validate_card_id(first11 + last)
        except InvalidInput:
            refused.append(last)
    assert refused == [str(reference_check_digit(first11))]
