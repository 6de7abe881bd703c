"""Tamper evidence (DESIGN.md §3).

Each event is linked to the previous event of its stream by a keyed hash
that also covers its global position:

    link = HMAC-SHA256(integrity key, previous link || position (8 bytes) || canonical envelope)

Without the integrity key (kept outside the database) no one can make a link
that checks, so rewriting, reordering or renumbering events is detected
even by someone who can write every table. Events chained before keyed
chains used `legacy_hash` (an unkeyed SHA-256 without the position);
`pinlife migrate` re-chains them under the key (service/store/rechain.py).

The Merkle leaf of an event (`leaf_data`) is unkeyed on purpose: anyone
holding the events can recompute a checkpoint's root (service/domain/merkle.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .merkle import leaf_hash

GENESIS_HASH = "0" * 64


def canonical_time(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def canonical(envelope: dict[str, Any]) -> bytes:
    return _CANONICAL.encode(envelope).encode()


def hashed_envelope(
    stream_id: str,
    version: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    occurred_at: datetime,
    pin_type: str | None,
    channel: str,
    terminal_id: str,
    request_id: str,
    payload: dict[str, Any],
    office: str | None = None,
) -> dict[str, Any]:
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


def link_hash(key: bytes, prev_hash: str, position: int, envelope: dict[str, Any]) -> str:
    """envelope: every stored field of the event but position, hashes and key id."""
    return _link(key, prev_hash, leaf_data(position, envelope))


def link_and_leaf(key: bytes, prev_hash: str, position: int, envelope: dict[str, Any]) -> tuple[str, bytes]:
    """link_hash, and the hash of the event's Merkle leaf, from one canonical
    encoding: the write path hands its leaves to the checkpoints."""
    data = leaf_data(position, envelope)
    return _link(key, prev_hash, data), leaf_hash(data)


def _link(key: bytes, prev_hash: str, data: bytes) -> str:
    """The link: HMAC-SHA256 of the previous link and the event's position and canonical envelope."""
    return hmac.digest(key, bytes.fromhex(prev_hash) + data, "sha256").hex()


def legacy_hash(prev_hash: str, envelope: dict[str, Any]) -> str:
    """The unkeyed link of events stored before keyed chains (migration 0005)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical(envelope)).hexdigest()


def leaf_data(position: int, envelope: dict[str, Any]) -> bytes:
    """What an event's Merkle leaf hashes: its position and canonical envelope."""
    return position.to_bytes(8, "big") + canonical(envelope)


@dataclass(frozen=True)
class BrokenLink:
    stream_id: str
    version: int
    position: int
    reason: str


@dataclass(frozen=True)
class StreamHead:
    """What the stream's head row records: its last version and hash."""

    stream_id: str
    version: int
    hash: str


class Link(NamedTuple):
    """One stored event as the chain sees it."""

    position: int
    envelope: dict[str, Any]
    prev_hash: str
    hash: str
    key_id: str | None


def first_broken_link(
    stream: Iterable[Link], key: Callable[[str], bytes | None], head: StreamHead | None = None
) -> BrokenLink | None:
    """stream: one stream's events in version order; key: an integrity key
    by id (None when not loaded). With the head, a stream cut short (its last
    events deleted) is broken too."""
    expected_prev = GENESIS_HASH
    expected_version = 1
    last_position = 0
    for position, envelope, prev_hash, stored_hash, key_id in stream:
        sid, version = envelope["card_id"], envelope["version"]
        if version != expected_version:
            return BrokenLink(sid, version, position, f"version {version} where {expected_version} was expected")
        if prev_hash != expected_prev:
            return BrokenLink(sid, version, position, "previous-hash does not match the previous event")
        if key_id is None:
            return BrokenLink(sid, version, position, "the link is not keyed (run `pinlife migrate` with the key file)")
        k = key(key_id)
        if k is None:
            return BrokenLink(sid, version, position, f"integrity key {key_id!r} is not loaded")
        if not hmac.compare_digest(link_hash(k, prev_hash, position, envelope), stored_hash):
            return BrokenLink(sid, version, position, "the keyed link does not match the event's content and position")
        expected_prev, expected_version, last_position = stored_hash, version + 1, position
    if head is not None and (head.version, head.hash) != (expected_version - 1, expected_prev):
        return BrokenLink(
            head.stream_id,
            expected_version,
            last_position,
            f"the stream ends at version {expected_version - 1} but its head records version {head.version}",
        )
    return None
