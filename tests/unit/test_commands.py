"""Commands are validated on construction and name every bad field at once,
with the API's field names; a malformed command costs no try."""

from __future__ import annotations

import pytest

from pinlife.domain.commands import ChangePin, EnrollCard, VerifyPin
from pinlife.domain.errors import FieldViolation, InvalidInput
from pinlife.domain.pins import UnknownPinType
from tests.unit.helpers import CARD, CARD_INFO, RESIDENT, SIGNATURE, USER

RID = "req-00000001"


def bad_fields(create, *args) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        create(*args)
    return sorted(v.field for v in info.value.violations)


# --- VerifyPin --------------------------------------------------------------


def test_verify_pin_holds_the_normalized_pin():
    cmd = VerifyPin.create(RID, CARD, SIGNATURE, "abc123")
    assert (cmd.request_id, cmd.card_id, cmd.pin_type, cmd.pin) == (RID, CARD, SIGNATURE, "ABC123")


def test_verify_pin_collects_every_violation():
    assert bad_fields(VerifyPin.create, "short", "", USER, "12") == ["card_id", "pin", "request_id"]


def test_verify_pin_missing_pin_type():
    assert bad_fields(VerifyPin.create, RID, CARD, None, "1234") == ["pin_type"]


def test_verify_pin_missing_pin_type_with_other_errors():
    assert bad_fields(VerifyPin.create, "", "bad id", None, "1234") == ["card_id", "pin_type", "request_id"]


@pytest.mark.parametrize(
    "create, args, expected",
    [
        (VerifyPin.create, (RID, CARD, None, ""), ["pin", "pin_type"]),
        (ChangePin.create, (RID, CARD, None, "", ""), ["current_pin", "new_pin", "pin_type"]),
        (ChangePin.create, (RID, CARD, None, "1234", ""), ["new_pin", "pin_type"]),
    ],
    ids=["verify", "change", "change-new-only"],
)
def test_missing_pin_type_and_missing_pin_are_both_reported(create, args, expected):
    assert bad_fields(create, *args) == expected


def test_enroll_missing_pin_type_and_missing_pin_are_both_reported():
    assert bad_fields(EnrollCard.create, RID, CARD, [(None, "")]) == ["pins[0].pin", "pins[0].pin_type"]


@pytest.mark.parametrize(
    "request_id, ok",
    [
        ("", False),
        ("1234567", False),  # 7: too short
        ("12345678", True),  # 8: the shortest
        ("x" * 128, True),
        ("x" * 129, False),
        ("req 0001x", False),  # a space
        ("リクエスト00001", False),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
    ],
)
def test_request_ids(request_id, ok):
    if ok:
        assert VerifyPin.create(request_id, CARD, USER, "1234").request_id == request_id
    else:
        assert bad_fields(VerifyPin.create, request_id, CARD, USER, "1234") == ["request_id"]


def test_verify_pin_refuses_an_individual_number_as_card_id():
    assert bad_fields(VerifyPin.create, RID, "123456789018", USER, "1234") == ["card_id"]


# --- ChangePin --------------------------------------------------------------


def test_change_pin_holds_both_normalized_pins():
    cmd = ChangePin.create(RID, CARD, SIGNATURE, "abc123", "xyz789")
    assert (cmd.current_pin, cmd.new_pin) == ("ABC123", "XYZ789")


def test_change_pin_collects_every_violation():
    assert bad_fields(ChangePin.create, "", "カード", USER, "12345", "abcd") == [
        "card_id",
        "current_pin",
        "new_pin",
        "request_id",
    ]


def test_change_pin_names_which_pin_is_bad():
    assert bad_fields(ChangePin.create, RID, CARD, USER, "1234", "123") == ["new_pin"]
    assert bad_fields(ChangePin.create, RID, CARD, USER, "", "1234") == ["current_pin"]
    assert bad_fields(ChangePin.create, RID, CARD, SIGNATURE, "ABC123", "ABCDEF") == ["new_pin"]


def test_change_pin_formats_follow_the_pin_type():
    # A valid signature PIN is not a valid 4-digit PIN and vice versa.
    assert bad_fields(ChangePin.create, RID, CARD, USER, "ABC123", "ABC123") == ["current_pin", "new_pin"]
    assert bad_fields(ChangePin.create, RID, CARD, SIGNATURE, "1234", "1234") == ["current_pin", "new_pin"]


def test_change_pin_missing_pin_type():
    assert bad_fields(ChangePin.create, RID, CARD, None, "1234", "5678") == ["pin_type"]


# --- EnrollCard -------------------------------------------------------------


def test_enroll_card_holds_normalized_pins_by_type():
    cmd = EnrollCard.create(RID, CARD, [(USER, "1234"), (SIGNATURE, "abc123")])
    assert cmd.pins == {USER: "1234", SIGNATURE: "ABC123"}


def test_enroll_card_needs_at_least_one_pin():
    assert bad_fields(EnrollCard.create, RID, CARD, []) == ["pins"]


def test_enroll_card_collects_every_violation_with_indexed_names():
    pins = [
        (RESIDENT, "12"),  # pins[0].pin
        (None, "1234"),  # pins[1].pin_type
        (RESIDENT, "5678"),  # pins[2].pin_type: given twice
        (SIGNATURE, "ABCDEF"),  # pins[3].pin: no digit
    ]
    assert bad_fields(EnrollCard.create, "short", "", pins) == [
        "card_id",
        "pins[0].pin",
        "pins[1].pin_type",
        "pins[2].pin_type",
        "pins[3].pin",
        "request_id",
    ]


def test_enroll_card_takes_at_most_one_pin_of_each_type_and_says_so_once():
    with pytest.raises(InvalidInput) as info:
        EnrollCard.create(RID, CARD, [(USER, "x")] * 3000)
    assert [(v.field, v.description) for v in info.value.violations] == [("pins", "at most 4 PINs: one of each PIN type")]


def test_enroll_card_duplicate_pin_type_is_named():
    with pytest.raises(InvalidInput) as info:
        EnrollCard.create(RID, CARD, [(CARD_INFO, "1111"), (CARD_INFO, "2222")])
    (violation,) = info.value.violations
    assert violation.field == "pins[1].pin_type"
    assert "twice" in violation.description
    assert "2222" not in str(info.value)


def test_enroll_card_the_three_four_digit_pins_may_share_a_value():
    cmd = EnrollCard.create(RID, CARD, [(RESIDENT, "1234"), (CARD_INFO, "1234"), (USER, "1234")])
    assert cmd.pins == {RESIDENT: "1234", CARD_INFO: "1234", USER: "1234"}


# --- no PIN in a command's repr or in an error --------------------------------

SECRET_4 = "8642"
SECRET_SIG = "SECRETPIN7Q"


def test_repr_of_commands_never_shows_a_pin():
    commands = [
        VerifyPin.create(RID, CARD, USER, SECRET_4),
        VerifyPin.create(RID, CARD, SIGNATURE, SECRET_SIG.lower()),
        ChangePin.create(RID, CARD, SIGNATURE, SECRET_SIG, "NEWSECRET9Z"),
        EnrollCard.create(RID, CARD, [(USER, SECRET_4), (SIGNATURE, SECRET_SIG)]),
    ]
    for cmd in commands:
        text = repr(cmd) + str(cmd)
        for secret in (SECRET_4, SECRET_SIG, "NEWSECRET9Z"):
            assert secret.lower() not in text.lower()


def test_errors_of_commands_never_show_a_pin():
    errors = []
    for create, args in [
        (VerifyPin.create, ("", CARD, USER, "86420")),
        (ChangePin.create, ("", CARD, SIGNATURE, "SECRETPIN7Q!", "SECRETPIN7Q?")),
        (EnrollCard.create, ("", CARD, [(USER, "86420"), (USER, "86421")])),
    ]:
        with pytest.raises(InvalidInput) as info:
            create(*args)
        errors.append(info.value)
    for error in errors:
        text = str(error) + repr(error) + repr(error.violations)
        assert "8642" not in text
        assert "secretpin7q" not in text.lower()


# --- PIN types: one message, missing or unknown --------------------------------


@pytest.mark.parametrize(
    "given, description",
    [
        (None, "is required: one of the four PIN types"),
        (UnknownPinType(99), "is not a known PIN type (99): one of the four PIN types"),
    ],
    ids=["missing", "unknown"],
)
def test_a_missing_and_an_unknown_pin_type_have_one_message_each(given, description):
    for create, field in [
        (lambda t: VerifyPin.create(RID, CARD, t, "1234"), "pin_type"),
        (lambda t: ChangePin.create(RID, CARD, t, "1234", "5678"), "pin_type"),
        (lambda t: EnrollCard.create(RID, CARD, [(t, "1234")]), "pins[0].pin_type"),
    ]:
        with pytest.raises(InvalidInput) as info:
            create(given)
        assert [(v.field, v.description) for v in info.value.violations] == [(field, description)]


# --- at most twenty violations in one error ---------------------------------


def test_an_error_keeps_twenty_violations_and_counts_the_rest():
    error = InvalidInput([FieldViolation(f"f{i}", "is bad") for i in range(25)])
    assert [v.field for v in error.violations] == [f"f{i}" for i in range(20)] + ["request"]
    assert error.violations[-1].description == "and 5 more"
    assert str(error).endswith("f19: is bad; request: and 5 more")
    assert len(InvalidInput([FieldViolation(f"f{i}", "is bad") for i in range(20)]).violations) == 20
