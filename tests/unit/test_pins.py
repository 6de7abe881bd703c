"""PIN formats and retry limits (DESIGN.md §2)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlife.domain.errors import InvalidInput
from pinlife.domain.pins import PinType, normalize_pin, retry_limit
from tests.unit.helpers import ALL_TYPES, FOUR_DIGIT_TYPES, SIGNATURE

# The documented formats, written independently of service/domain/pins.py.
FOUR_DIGIT_FORMAT = re.compile(r"[0-9]{4}")
SIGNATURE_FORMAT = re.compile(r"[A-Z0-9]{6,16}")


def documented_format(pin_type: PinType, pin: str) -> bool:
    if pin_type is SIGNATURE:
        return (
            SIGNATURE_FORMAT.fullmatch(pin) is not None
            and any(c in string.ascii_uppercase for c in pin)
            and any(c in string.digits for c in pin)
        )
    return FOUR_DIGIT_FORMAT.fullmatch(pin) is not None


def rejected(pin_type: PinType, raw) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        normalize_pin(pin_type, raw, "pin")
    return info.value


# --- retry limits -----------------------------------------------------------


@pytest.mark.parametrize(
    "pin_type, limit",
    [
        (PinType.RESIDENT_REGISTRY, 3),
        (PinType.CARD_INFO_INPUT_SUPPORT, 3),
        (PinType.USER_CERTIFICATE, 3),
        (PinType.SIGNATURE, 5),
    ],
)
def test_retry_limits(pin_type, limit):
    assert retry_limit(pin_type) == limit


def test_there_are_exactly_four_pin_types():
    assert set(PinType) == set(ALL_TYPES)


# --- 4-digit PINs -----------------------------------------------------------


@pytest.mark.parametrize("pin_type", FOUR_DIGIT_TYPES)
@pytest.mark.parametrize("pin", ["0000", "1234", "9876", "0007"])
def test_four_digit_pin_accepts_exactly_four_ascii_digits(pin_type, pin):
    assert normalize_pin(pin_type, pin, "pin") == pin


@pytest.mark.parametrize("pin_type", FOUR_DIGIT_TYPES)
@pytest.mark.parametrize(
    "raw",
    [
        "123",  # 3 digits
        "12345",  # 5 digits
        "12a4",  # a letter
        "ABCD",
        "１２３４",  # full-width digits
        "١٢٣٤",  # Arabic-Indic digits (str.isdigit() is True for these)
        "12 4",  # a space inside
        " 1234",  # leading space
        "1234 ",  # trailing space
        "1234\n",  # a trailing newline ($ would accept it)
        "",  # empty
        "-123",
        "12.4",
    ],
)
def test_four_digit_pin_rejects_malformed(pin_type, raw):
    error = rejected(pin_type, raw)
    assert [v.field for v in error.violations] == ["pin"]


def test_missing_pin_is_required():
    error = rejected(PinType.USER_CERTIFICATE, None)
    assert [v.field for v in error.violations] == ["pin"]
    assert "required" in error.violations[0].description


def test_violation_uses_the_given_field_name():
    with pytest.raises(InvalidInput) as info:
        normalize_pin(PinType.USER_CERTIFICATE, "12", "current_pin")
    assert [v.field for v in info.value.violations] == ["current_pin"]


# --- signature PIN ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("ABC123", "ABC123"),  # 6: the shortest
        ("A1B2C3D4E5F6G7H8", "A1B2C3D4E5F6G7H8"),  # 16: the longest
        ("abc123", "ABC123"),  # lower case is taken as upper case
        ("aBc123", "ABC123"),
        ("1AAAAA", "1AAAAA"),  # one digit is enough
        ("A11111", "A11111"),  # one letter is enough
        ("Z9Z9Z9Z9", "Z9Z9Z9Z9"),
    ],
)
def test_signature_pin_accepts_and_normalizes(raw, expected):
    assert normalize_pin(SIGNATURE, raw, "pin") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "AB123",  # 5 characters
        "A1B2C3D4E5F6G7H8I",  # 17 characters
        "ABCDEFGH",  # letters only
        "12345678",  # digits only
        "ABC-123",  # a symbol
        "ABC_123",
        "ABC 123",  # a space
        "ABC123!",
        "ÄBC123",  # a non-ASCII letter
        "ÀBC123",
        "ΑBC123",  # Greek capital alpha, looks like A
        "ＡＢＣ１２３",  # full-width
        "ABC１２３",  # full-width digits
        "ßBC123",  # "ß".upper() == "SS": must not sneak through upper-casing
        "ıbc123",  # dotless i: "ı".upper() == "I"
        "ﬁbc123",  # the ligature "ﬁ".upper() == "FI"
        "ABC123\n",
        "",
    ],
)
def test_signature_pin_rejects_malformed(raw):
    error = rejected(SIGNATURE, raw)
    assert [v.field for v in error.violations] == ["pin"]


# --- the error never carries the PIN ---------------------------------------


@pytest.mark.parametrize(
    "pin_type, raw, secret",
    [
        (PinType.USER_CERTIFICATE, "86420", "86420"),
        (PinType.RESIDENT_REGISTRY, "8642x", "8642"),
        (SIGNATURE, "SECRETPIN7Q!", "SECRETPIN7Q"),
        (SIGNATURE, "secretpin7q!", "secretpin7q"),
        (SIGNATURE, "QWERTYUIOPASDFGH1", "QWERTYUIOPASDFGH1"),
    ],
)
def test_error_message_never_contains_the_pin(pin_type, raw, secret):
    error = rejected(pin_type, raw)
    for text in (str(error), repr(error), *(v.description for v in error.violations)):
        assert secret.lower() not in text.lower()
        assert raw not in text


def test_error_message_names_the_expected_format():
    assert "4 digits" in str(rejected(PinType.USER_CERTIFICATE, "12345"))
    assert "6 to 16" in str(rejected(SIGNATURE, "ABC12"))


# --- properties -------------------------------------------------------------

pin_types = st.sampled_from(ALL_TYPES)
# Text biased towards the interesting alphabet, plus anything at all.
near_pins = st.text(alphabet=string.ascii_letters + string.digits + " -１２ßıÄ\n", max_size=20)
anything = st.one_of(st.text(max_size=24), near_pins)


@settings(max_examples=200, deadline=None)
@given(pin_type=pin_types, raw=anything)
def test_random_text_is_either_accepted_in_the_documented_format_or_invalid_input(pin_type, raw):
    try:
        pin = normalize_pin(pin_type, raw, "pin")
    except InvalidInput as error:
        assert [v.field for v in error.violations] == ["pin"]
        return
    assert documented_format(pin_type, pin)
    # Accepted means: the same characters, only upper-cased for signatures.
    assert pin == (raw.upper() if pin_type is SIGNATURE else raw)


four_digit_pins = st.text(alphabet=string.digits, min_size=4, max_size=4)


@st.composite
def signature_pins(draw) -> str:
    length = draw(st.integers(6, 16))
    letter = draw(st.sampled_from(string.ascii_letters))
    digit = draw(st.sampled_from(string.digits))
    rest = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=length - 2, max_size=length - 2))
    chars = list(letter + digit + rest)
    return "".join(draw(st.permutations(chars)))


@settings(max_examples=200, deadline=None)
@given(pin_type=st.sampled_from(FOUR_DIGIT_TYPES), pin=four_digit_pins)
def test_generated_four_digit_pins_are_accepted(pin_type, pin):
    assert normalize_pin(pin_type, pin, "pin") == pin


@settings(max_examples=200, deadline=None)
@given(pin=signature_pins())
def test_generated_signature_pins_are_accepted_upper_cased(pin):
    assert normalize_pin(SIGNATURE, pin, "pin") == pin.upper()


@settings(max_examples=200, deadline=None)
@given(pin_type=pin_types, raw=anything)
def test_normalizing_is_idempotent(pin_type, raw):
    try:
        pin = normalize_pin(pin_type, raw, "pin")
    except InvalidInput:
        return
    assert normalize_pin(pin_type, pin, "pin") == pin
