"""What the store holds, as Python values: an event with its envelope, an
answer kept for replays, and the fields the hash chain covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any, overload

from service.domain.chain import canonical_time


@overload
def utc(at: datetime) -> datetime: ...
@overload
def utc(at: None) -> None: ...
@overload
def utc(at: datetime | None) -> datetime | None: ...
def utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@dataclass(frozen=True)
class StoredEvent:
    position: int
    stream_id: str
    stream_kind: str
    version: int
    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    pin_type: str | None
    channel: str
    terminal_id: str
    request_id: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    key_id: str | None = None  # of the chain's HMAC; None before keyed chains
    office: str | None = None  # the counter's office behind the event

    def envelope(self) -> dict[str, Any]:
        return hashed_envelope(
            self.stream_id, self.version, self.event_id, self.event_type, self.schema_version, self.occurred_at,
            self.pin_type, self.channel, self.terminal_id, self.request_id, self.payload, self.office,
        )  # fmt: skip


def hashed_envelope(
    stream_id: str, version: int, event_id: str, event_type: str, schema_version: int, occurred_at: datetime,
    pin_type: str | None, channel: str, terminal_id: str, request_id: str, payload: dict[str, Any],
    office: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every field that the hash covers (all but position and the hashes):
    the one definition, for appending and for checking the chain. The
    stream's id is hashed under the key "card_id", the name it had when the
    first events were chained: renaming it would break every stored hash.
    The office is covered when set (counters' events since revision 0006),
    so every event stored before it keeps its hash."""
    envelope = {
        "card_id": stream_id,
        "version": version,
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": schema_version,
        "occurred_at": canonical_time(occurred_at),
        "pin_type": pin_type,
        "channel": channel,
        "terminal_id": terminal_id,
        "request_id": request_id,
        "payload": payload,
    }
    if office is not None:
        envelope["office"] = office
    return envelope


def stored_event(row) -> StoredEvent:
    m = row._mapping
    return StoredEvent(**{**m, "occurred_at": utc(m["occurred_at"])})
