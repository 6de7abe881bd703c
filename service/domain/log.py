"""The log as the domain sees it: an event with the envelope the log keeps
for it (DESIGN.md §3), read from its stored shape once.

A stored event keeps the shape and schema version it was written with;
`read_event` turns it into the current event class (upcasting.py) and
`LoggedEvent` carries both: the payload as stored (what its keyed link
covers) and the event it reads as. A row this release cannot read (an
unknown type, a newer schema version, a payload that does not fit its
class) is not a crash: it reads as `event=None` with the reason, for the
reader to report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .chain import Link, hashed_envelope
from .events import Event, Recorded
from .upcasting import UnknownEventShape, event_from_stored, upcast


def read_event(event_type: str, schema_version: int, pin_type: str | None, payload: Any) -> tuple[Event | None, str | None]:
    """The current event a stored one reads as, or None and why it cannot be read."""
    try:
        if not isinstance(payload, dict):
            raise UnknownEventShape(f"the payload is not a JSON object but {type(payload).__name__}")
        return event_from_stored(event_type, schema_version, pin_type, payload), None
    except UnknownEventShape as exc:
        return None, str(exc)
    except (KeyError, TypeError, ValueError) as exc:  # a field missing, of the wrong type, or an unknown enum value
        return None, f"{event_type} v{schema_version} does not fit its class: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the log holds it: its envelope, the payload as stored,
    and the domain event it reads as (None when it cannot be read)."""

    position: int
    stream_id: str
    stream_kind: str
    version: int
    event_id: str
    event_type: str
    schema_version: int  # as stored
    occurred_at: datetime
    pin_type: str | None
    channel: str
    terminal_id: str
    request_id: str
    payload: dict[str, Any]  # as stored: what the keyed link covers
    prev_hash: str
    hash: str
    key_id: str | None = None  # of the chain's HMAC; None before keyed chains
    office: str | None = None  # the counter's office behind the event
    event: Event | None = field(default=None, compare=False)
    unreadable: str | None = field(default=None, compare=False)  # why `event` is None

    @classmethod
    def read(cls, **columns: Any) -> LoggedEvent:
        """A stored row's columns, its event read once."""
        event, why = read_event(columns["event_type"], columns["schema_version"], columns["pin_type"], columns["payload"])
        return cls(**columns, event=event, unreadable=why)

    @property
    def current_schema_version(self) -> int:
        """The schema version the event reads as (the stored one when it cannot be read)."""
        return type(self.event).schema_version if self.event is not None else self.schema_version

    def current_payload(self) -> dict[str, Any]:
        """The payload in the current shape of its type (as stored when it cannot be read)."""
        return upcast(self.event_type, self.schema_version, self.payload) if self.event is not None else self.payload

    def envelope(self) -> dict[str, Any]:
        """Every field its keyed link and Merkle leaf cover (chain.hashed_envelope)."""
        return hashed_envelope(
            self.stream_id,
            self.version,
            self.event_id,
            self.event_type,
            self.schema_version,
            self.occurred_at,
            self.pin_type,
            self.channel,
            self.terminal_id,
            self.request_id,
            self.payload,
            self.office,
        )

    def link(self) -> Link:
        """Its place in its stream's keyed chain (chain.first_broken_link checks it)."""
        return Link(self.position, self.envelope(), self.prev_hash, self.hash, self.key_id)

    def recorded(self) -> Recorded:
        """What evolve needs of it (the event must be readable)."""
        if self.event is None:
            raise UnknownEventShape(self.unreadable or f"{self.event_type} cannot be read")
        return Recorded(self.event, self.version, self.occurred_at, self.office)
