"""The lock-state projection's rows <-> domain state, in one place for the
write path (unit_of_work.py) and the reads (reads.py), and what a card's MAC
covers (state_message).

A card's MAC (cards.mac, under the integrity keys) covers its whole state
(every PIN's row, open inquiries and reservations, status, ward) and its
stream head (version and last link). It is checked whenever a card is loaded
for a command or a status read: a row edited, deleted, added or copied from
another card never authenticates, so the service never acts on it.

A terminal's MAC (terminals.mac) covers its throttle state (the failure
window and the end of its throttle) and its stream head, likewise checked
whenever the write path loads the row (terminal_message)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from ..app.ports import StoredRequest
from ..domain.chain import canonical, canonical_time
from ..domain.pins import PIN_TYPE_BY_VALUE, PinType
from ..domain.state import EMPTY, CardState, CardStatus, CodeDay, Inquiry, PinState, Reservation
from ..domain.throttle import TerminalWindow
from ..keys.ring import Verifier
from .records import utc

# The columns of pin_states after card_id, in hot_sql.PIN_COLUMNS order but
# for remaining_tries (derived): what a state is read from.
PIN_READ_COLUMNS = (
    "pin_type",
    "consecutive_failures",
    "status",
    "locked_at",
    "last_version",
    "inquiry_id",
    "inquiry_expires_at",
    "inquiry_wrong_codes",
    "reservation_id",
    "reservation_proving_pin_type",
    "reservation_expires_at",
    "code_day",
    "code_day_wrong_codes",
)


_STATUS = {s.value: s for s in CardStatus}
_STATUS_VALUE = {s: s.value for s in CardStatus}
_PIN_ORDER = sorted(((t, t.value) for t in PinType), key=lambda tv: tv[1])  # what a MAC covers, in this order


def card_state(
    card_id: str,
    version: int,
    status: str,
    ward: str | None,
    pin_rows: Iterable[Sequence[Any]],
    read_time: Callable = lambda v: v,
) -> CardState:
    """A card from its head and its pin_states rows (PIN_READ_COLUMNS;
    `read_time` converts stored times where the driver has not)."""
    pins, inquiries, reservations, code_days = {}, {}, {}, {}
    for (
        pin_type,
        failures,
        pin_status,
        locked_at,
        last_version,
        inq_id,
        inq_expires,
        inq_wrong,
        res_id,
        res_proving,
        res_expires,
        code_day,
        code_day_wrong,
    ) in pin_rows:
        t = PIN_TYPE_BY_VALUE[pin_type]
        locked_at = None if locked_at is None else utc(read_time(locked_at))
        pins[t] = PinState(t, failures, pin_status == "locked", locked_at, last_version)
        if inq_id is not None:
            inquiries[t] = Inquiry(inq_id, utc(read_time(inq_expires)), inq_wrong or 0)
        if res_id is not None:
            reservations[t] = Reservation(res_id, PinType(res_proving), utc(read_time(res_expires)))
        if code_day is not None:
            code_days[t] = CodeDay(date.fromisoformat(code_day), code_day_wrong)
    return CardState(card_id, version, pins, _STATUS[status], ward, inquiries, reservations, code_days)


def pin_row(card_id: str, state: CardState, t: PinType, bind_time: Callable[[datetime | None], Any]) -> tuple:
    """A pin_states row in hot_sql.PIN_COLUMNS order."""
    p = state.pins[t]
    row = (
        card_id,
        t.value,
        "locked" if p.locked else "active",
        p.consecutive_failures,
        p.remaining_tries,
        None if p.locked_at is None else bind_time(p.locked_at),
        p.last_version,
    )
    inquiry, reservation = state.inquiries.get(t), state.reservations.get(t)
    code_day = state.code_days.get(t) if state.code_days else None
    codes = (None, None) if code_day is None else (code_day.day.isoformat(), code_day.wrong_codes)
    if inquiry is None and reservation is None:
        return row + (None,) * 6 + codes
    return row + (
        inquiry and inquiry.inquiry_id,
        inquiry and bind_time(inquiry.expires_at),
        inquiry and inquiry.wrong_codes,
        reservation and reservation.reservation_id,
        reservation and reservation.proving_pin_type.value,
        reservation and bind_time(reservation.expires_at),
        *codes,
    )


def changed_pins(before: CardState, after: CardState) -> list[PinType]:
    """The PINs whose projection rows must be written after an append: those
    an event changed, and those whose open inquiry, reservation or day's
    count of wrong proxy codes changed."""
    changed = [t for t, p in after.pins.items() if p.last_version > before.version]
    if before.inquiries or after.inquiries or before.reservations or after.reservations or after.code_days:
        changed += [
            t
            for t in after.pins
            if t not in changed
            and (
                before.inquiries.get(t) != after.inquiries.get(t)
                or before.reservations.get(t) != after.reservations.get(t)
                or before.code_days.get(t) != after.code_days.get(t)
            )
        ]
    return changed


def window_from_row(failures: str | None, until: Any, read_time: Callable) -> TerminalWindow:
    """A terminal's window from its row. throttle_failures holds JSON: the
    failure window alone as {card: time} (as every row was written before
    suspensions were bounded, and still is while the terminal has none in
    its window), or {"failures": {card: time}, "suspensions": [time, ...]}
    (a failure window's values are strings, never an object, so the two
    shapes cannot be taken for each other)."""
    value = json.loads(failures) if failures else {}
    suspensions: tuple[datetime, ...] = ()
    if isinstance(value.get("failures"), dict):
        suspensions = tuple(datetime.fromisoformat(at) for at in value.get("suspensions", ()))
        value = value["failures"]
    last = {c: datetime.fromisoformat(at) for c, at in value.items()} if value else EMPTY
    return TerminalWindow(last, None if until is None else utc(read_time(until)), suspensions)


def window_to_row(window: TerminalWindow, bind_time: Callable) -> tuple[str | None, Any]:
    """The row values of a terminal's window (throttle_failures, throttled_until): see window_from_row."""
    last = {c: at.isoformat() for c, at in window.last_failure.items()}
    if window.suspensions:
        failures: str | None = json.dumps({"failures": last, "suspensions": [at.isoformat() for at in window.suspensions]})
    else:
        failures = json.dumps(last) if last else None
    return failures, None if window.throttled_until is None else bind_time(window.throttled_until)


def _t(at: datetime | None) -> str:
    return "" if at is None else canonical_time(at)


def state_message(state: CardState, last_hash: str, verifiers: Mapping[PinType, Verifier | None]) -> bytes:
    """The bytes a card's MAC covers: its state, head and PIN verifiers (so
    an older verifier cannot be restored). No field holds \\x1e or \\x1f.
    A stored format (tests/store/test_mac_message.py); built on every card
    load and write, hence spelled out."""
    parts = ["pinlife-card-v1", state.card_id, str(state.version), last_hash, _STATUS_VALUE[state.status], state.ward or ""]
    pins, inquiries, reservations, code_days = state.pins, state.inquiries, state.reservations, state.code_days
    for t, value in _PIN_ORDER:
        if (p := pins.get(t)) is None:
            continue
        v = verifiers.get(t)
        at = p.locked_at
        part = (
            f"{'-' if v is None else f'{v.key_id}:{v.digest}'}\x1e{value}\x1e{p.consecutive_failures}"
            f"\x1e{'1' if p.locked else '0'}\x1e{'' if at is None else canonical_time(at)}\x1e{p.last_version}"
        )
        if inquiries and (inq := inquiries.get(t)) is not None:
            part += f"\x1ei\x1e{inq.inquiry_id}\x1e{_t(inq.expires_at)}\x1e{inq.wrong_codes}"
        if reservations and (res := reservations.get(t)) is not None:
            part += f"\x1er\x1e{res.reservation_id}\x1e{res.proving_pin_type.value}\x1e{_t(res.expires_at)}"
        if code_days and (day := code_days.get(t)) is not None:  # absent from every MAC made before it existed
            part += f"\x1ec\x1e{day.day.isoformat()}\x1e{day.wrong_codes}"
        parts.append(part)
    return "\x1f".join(parts).encode()


def answer_message(a: StoredRequest, created_at: str) -> bytes:
    """The bytes a kept answer's MAC covers: every column of its row, the
    outcome in canonical JSON (PostgreSQL's JSONB does not keep the text),
    created_at as canonical_time gives it (the write path formats a batch's
    time once). A stored format (tests/store/test_mac_message.py)."""
    parts = (
        "pinlife-answer-v1",
        a.terminal_id,
        a.request_id,
        a.card_id,
        a.command,
        a.fingerprint,
        canonical(a.outcome).decode(),
        str(a.stream_version),
        created_at,
    )
    return "\x1f".join(parts).encode()


def terminal_message(terminal_id: str, version: int, last_hash: str, window: TerminalWindow, repeats: str | None = None) -> bytes:
    """The bytes a terminal row's MAC covers: its stream head and its whole
    state (each failed card with the time of its last failure, in canonical
    JSON, the end of the throttle, the times of its suspensions, and the
    repeats it has counted but not recorded, as stored), so a window reset,
    shrunk or moved to another terminal, a suspension count cleared or a
    count of repeats dropped never authenticates. A stored format
    (tests/store/test_mac_message.py)."""
    failures = {c: canonical_time(at) for c, at in window.last_failure.items()}
    parts = (
        "pinlife-terminal-v1",
        terminal_id,
        str(version),
        last_hash,
        canonical(failures).decode(),
        _t(window.throttled_until),
        ",".join(canonical_time(at) for at in window.suspensions),
        repeats or "",
    )
    return "\x1f".join(parts).encode()
