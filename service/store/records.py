"""The one mapper from stored rows to Python values: a row of the log to a
LoggedEvent (its event read once, service/domain/log.py), and times as
UTC on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from ..domain.log import LoggedEvent


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


def logged_event(row: Any) -> LoggedEvent:
    """A row of `events` (every column), as the domain reads it."""
    m = row._mapping
    return LoggedEvent.read(**{**m, "occurred_at": utc(m["occurred_at"])})
