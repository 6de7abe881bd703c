"""Repeated refusals and attempts, aggregated per (terminal, key, window)
(DESIGN.md §5: no terminal can grow the log without bound; docs/audit.md,
"Repeated refusals and attempts").

The key of an event is its stream (the card, or the terminal's own stream),
its type, its PIN type and the rest of its payload but for its counts (an
attempt's purpose, a refusal's procedure and reason, an audit call's RPC
and filter). Per terminal and key:

- the first occurrence is recorded as its own event, and opens a window of
  `Policy.repeat_window`;
- the occurrences within the window are only counted;
- the first occurrence after the window is recorded again, carrying in
  `repeated` the count of those not recorded on their own since the
  previous event of the key; it opens the next window.

The count is kept with the terminal's row (Repeats, read and written in the
write transaction, as the throttle's window is: throttle.py), so it is
exact whatever the concurrency, across instances, and survives restarts
and kill -9: every occurrence is an event, or counted in the `repeated` of
a later event of its key, or in a RepeatsCounted, or still pending in the
terminal's row. At most MAX_KEYS keys are remembered per terminal; a new
key when they are all in use forgets the oldest key with nothing pending
or, failing that, reports the oldest key's pending count as a
RepeatsCounted on the terminal's stream (that key then starts afresh).

So per terminal and window, at most one event per key, plus at most one
RepeatsCounted per new key beyond MAX_KEYS keys pending.

Pure: the caller passes the time in; evolve never sees any of this (the
aggregated events change no state).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from .events import (
    AuditRead,
    CounterOutOfService,
    CounterProcedureRefused,
    Event,
    LockedPinAttempted,
    RepeatsCounted,
    ResetRefused,
    SuspendedCardAttempted,
    SuspensionRefused,
)
from .pins import PinType

MAX_KEYS = 32  # keys remembered per terminal (its row holds at most this many)

# The aggregated event types, and the payload fields that are counts, not key.
AGGREGATED: Mapping[type[Event], frozenset[str]] = {
    LockedPinAttempted: frozenset({"repeated"}),
    SuspendedCardAttempted: frozenset({"repeated"}),
    CounterProcedureRefused: frozenset({"repeated"}),
    ResetRefused: frozenset({"repeated"}),
    CounterOutOfService: frozenset({"repeated"}),
    AuditRead: frozenset({"repeated", "events_returned"}),
    SuspensionRefused: frozenset({"repeated", "suspensions", "free_at"}),  # this call's count and time
}


class Pending(NamedTuple):
    """A key's window: when its last event was recorded, and how many of
    its occurrences since were only counted."""

    recorded_at: datetime
    repeats: int = 0


Repeats = Mapping[str, Pending]  # key -> its window, at most MAX_KEYS


class Key(NamedTuple):
    event_type: str
    stream: str  # a card id, or "" for the terminal's own stream
    pin_type: str | None
    detail: str  # the payload without its counts, as canonical JSON

    def encode(self) -> str:
        return json.dumps(list(self), separators=(",", ":"))

    @staticmethod
    def decode(text: str) -> Key:
        event_type, stream, pin_type, detail = json.loads(text)
        return Key(event_type, stream, pin_type, detail)


def aggregated(event: Event) -> bool:
    return type(event) in AGGREGATED


def key_of(stream: str, event: Event) -> Key:
    counts = AGGREGATED[type(event)]
    detail = {k: v for k, v in event.payload().items() if k not in counts}
    pin_type: PinType | None = getattr(event, "pin_type", None)
    return Key(
        event.type_name, stream, pin_type.value if pin_type else None, json.dumps(detail, sort_keys=True, separators=(",", ":"))
    )


def admit(
    repeats: Repeats, key: str, now: datetime, window: timedelta, max_keys: int = MAX_KEYS
) -> tuple[dict[str, Pending], int | None, tuple[tuple[str, Pending], ...]]:
    """One occurrence of `key` now: the new table; the count to record with
    a new event of the key now (None: only counted); and the keys whose
    pending counts must be reported now (RepeatsCounted) to make room."""
    last = repeats.get(key)
    if last is not None and now - last.recorded_at < window:
        return {**repeats, key: Pending(last.recorded_at, last.repeats + 1)}, None, ()
    repeated = 0 if last is None else last.repeats
    # forget keys whose window ended with nothing pending: they carry nothing
    table = {k: p for k, p in repeats.items() if k != key and (p.repeats > 0 or now - p.recorded_at < window)}
    reported: list[tuple[str, Pending]] = []
    while len(table) >= max_keys:
        idle = [(p.recorded_at, k) for k, p in table.items() if p.repeats == 0]
        oldest = min(idle) if idle else min((p.recorded_at, k) for k, p in table.items())
        gone = table.pop(oldest[1])
        if gone.repeats:
            reported.append((oldest[1], gone))
    table[key] = Pending(now, 0)
    return table, repeated, tuple(reported)


def reported(key: str, pending: Pending) -> RepeatsCounted:
    """The RepeatsCounted of a key's pending count (for the terminal's stream)."""
    k = Key.decode(key)
    pin_type = None if k.pin_type is None else PinType(k.pin_type)
    return RepeatsCounted(k.event_type, k.stream, k.detail, pending.repeats, pending.recorded_at.isoformat(), pin_type)


class Aggregated(NamedTuple):
    repeats: dict[str, Pending]
    events: tuple[Event, ...]  # to record on the stream (those counted left out, the others with their `repeated`)
    reports: tuple[RepeatsCounted, ...]  # to record on the terminal's stream


def aggregate(repeats: Repeats, stream: str, events: Sequence[Event], now: datetime, window: timedelta) -> Aggregated:
    """Which of one command's events for `stream` (a card id, or "" for the
    terminal's own) are recorded, and which only counted; events of other
    types pass as they are."""
    table: dict[str, Pending] = dict(repeats)
    kept: list[Event] = []
    reports: list[RepeatsCounted] = []
    for e in events:
        if not aggregated(e):
            kept.append(e)
            continue
        key = key_of(stream, e).encode()
        table, repeated, gone = admit(table, key, now, window)
        reports += [reported(k, p) for k, p in gone]
        if repeated is not None:
            kept.append(dataclasses.replace(e, repeated=repeated))  # type: ignore[call-arg]
    return Aggregated(table, tuple(kept), tuple(reports))


def to_json(repeats: Repeats) -> str | None:
    """The terminal row's `repeats` column (None: nothing remembered)."""
    if not repeats:
        return None
    return json.dumps({k: [p.recorded_at.isoformat(), p.repeats] for k, p in repeats.items()}, separators=(",", ":"))


def from_json(text: str | None) -> dict[str, Pending]:
    if not text:
        return {}
    raw: dict[str, Any] = json.loads(text)
    return {k: Pending(datetime.fromisoformat(at), int(count)) for k, (at, count) in raw.items()}
