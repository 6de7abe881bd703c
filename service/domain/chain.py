"""Tamper evidence (DESIGN.md §3): each event's hash chains it to the previous
event of its stream. hash = SHA-256(previous hash || canonical envelope)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

GENESIS_HASH = "0" * 64


def canonical_time(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(prev_hash: str, envelope: dict[str, Any]) -> str:
    """envelope: every stored field of the event but position and hashes."""
    body = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode()).hexdigest()


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


def first_broken_link(
    stream: Iterable[tuple[int, dict[str, Any], str, str]], head: StreamHead | None = None
) -> BrokenLink | None:
    """stream: (position, envelope, prev_hash, hash) of one stream in version order.
    With the head, a stream cut short (its last events deleted) is broken too."""
    expected_prev = GENESIS_HASH
    expected_version = 1
    last_position = 0
    for position, envelope, prev_hash, stored_hash in stream:
        card, version = envelope["card_id"], envelope["version"]
        if version != expected_version:
            return BrokenLink(card, version, position, f"version {version} where {expected_version} was expected")
        if prev_hash != expected_prev:
            return BrokenLink(card, version, position, "previous-hash does not match the previous event")
        if event_hash(prev_hash, envelope) != stored_hash:
            return BrokenLink(card, version, position, "hash does not match the event's content")
        expected_prev, expected_version, last_position = stored_hash, version + 1, position
    if head is not None and (head.version, head.hash) != (expected_version - 1, expected_prev):
        return BrokenLink(
            head.stream_id,
            expected_version,
            last_position,
            f"the stream ends at version {expected_version - 1} but its head records version {head.version}",
        )
    return None
