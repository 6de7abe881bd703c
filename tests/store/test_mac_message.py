"""The bytes a card's, a kept answer's and a terminal row's MAC cover
(service/store/projection.py state_message, answer_message,
terminal_message) are a stored format: every MAC in every store was made
over them, so they must never change, whatever the code that builds them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pinlife.app.ports import StoredRequest
from pinlife.domain.chain import canonical_time
from pinlife.domain.pins import PinType
from pinlife.domain.state import CardState, CardStatus, Inquiry, PinState, Reservation
from pinlife.domain.throttle import TerminalWindow
from pinlife.keys.ring import Verifier
from pinlife.store.projection import answer_message, state_message, terminal_message

AT = datetime(2026, 4, 1, 1, 30, 5, 123456, tzinfo=UTC)
RR, CI, UC, SG = PinType.RESIDENT_REGISTRY, PinType.CARD_INFO_INPUT_SUPPORT, PinType.USER_CERTIFICATE, PinType.SIGNATURE


def test_a_card_with_a_locked_pin_an_inquiry_and_a_reservation():
    state = CardState(
        "card-1",
        9,
        {RR: PinState(RR, 0, True, AT, 8), CI: PinState(CI, 2, False, None, 6)},
        CardStatus.SUSPENDED,
        "naka",
        {CI: Inquiry("inq-1", AT, 1)},
        {RR: Reservation("res-1", CI, AT)},
    )
    assert state_message(state, "ab" * 32, {RR: Verifier("k-1", "d" * 8), CI: None}) == (
        b"pinlife-card-v1\x1fcard-1\x1f9\x1f" + b"ab" * 32 + b"\x1fsuspended\x1fnaka"
        b"\x1f-\x1ecard_info_input_support\x1e2\x1e0\x1e\x1e6\x1ei\x1einq-1\x1e2026-04-01T01:30:05.123456Z\x1e1"
        b"\x1fk-1:dddddddd\x1eresident_registry\x1e0\x1e1\x1e2026-04-01T01:30:05.123456Z\x1e8"
        b"\x1er\x1eres-1\x1ecard_info_input_support\x1e2026-04-01T01:30:05.123456Z"
    )


def test_a_card_just_enrolled_with_every_pin():
    state = CardState("card-2", 1, {t: PinState(t, last_version=1) for t in PinType})
    assert state_message(state, "0" * 64, {t: Verifier("k-2", "eeee") for t in PinType}) == (
        b"pinlife-card-v1\x1fcard-2\x1f1\x1f" + b"0" * 64 + b"\x1factive\x1f"
        b"\x1fk-2:eeee\x1ecard_info_input_support\x1e0\x1e0\x1e\x1e1"
        b"\x1fk-2:eeee\x1eresident_registry\x1e0\x1e0\x1e\x1e1"
        b"\x1fk-2:eeee\x1esignature\x1e0\x1e0\x1e\x1e1"
        b"\x1fk-2:eeee\x1euser_certificate\x1e0\x1e0\x1e\x1e1"
    )


def test_a_kept_answer():
    outcome = {"kind": "check", "result": "wrong_pin", "remaining_tries": 2, "locked_now": False}
    assert answer_message(StoredRequest("term-1", "request-1", "card-1", "verify", "f" * 8, outcome, 7), canonical_time(AT)) == (
        b"pinlife-answer-v1\x1fterm-1\x1frequest-1\x1fcard-1\x1fverify\x1fffffffff"
        b'\x1f{"kind":"check","locked_now":false,"remaining_tries":2,"result":"wrong_pin"}'
        b"\x1f7\x1f2026-04-01T01:30:05.123456Z"
    )


def test_a_terminal_row():
    window = TerminalWindow(
        {"card-b": AT, "card-a": datetime(2026, 4, 1, 10, 30, 5, 123456, tzinfo=timezone(timedelta(hours=9)))}, AT
    )
    assert terminal_message("reader-1", 3, "ab" * 32, window) == (
        b"pinlife-terminal-v1\x1freader-1\x1f3\x1f" + b"ab" * 32 + b'\x1f{"card-a":"2026-04-01T01:30:05.123456Z",'
        b'"card-b":"2026-04-01T01:30:05.123456Z"}\x1f2026-04-01T01:30:05.123456Z\x1f\x1f'
    )
    assert terminal_message("reader-2", 0, "0" * 64, TerminalWindow()) == (
        b"pinlife-terminal-v1\x1freader-2\x1f0\x1f" + b"0" * 64 + b"\x1f{}\x1f\x1f\x1f"
    )
    counted = '{"k":["2026-04-01T01:30:05.123456+00:00",3]}'  # the repeats column, as stored
    suspended = TerminalWindow(suspensions=(AT,))
    assert terminal_message("call-1", 2, "cd" * 32, suspended, counted) == (
        b"pinlife-terminal-v1\x1fcall-1\x1f2\x1f"
        + b"cd" * 32
        + b"\x1f{}\x1f\x1f2026-04-01T01:30:05.123456Z\x1f"
        + counted.encode()
    )
