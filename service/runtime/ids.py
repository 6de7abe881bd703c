"""Fresh ids: UUIDv7 (RFC 9562), time-ordered, so each new id lands at the
right-hand end of a unique index rather than on a random page of it
(docs/performance.md). uuid-utils keeps them increasing within a process."""

from __future__ import annotations

import uuid_utils


def new_id() -> str:
    return str(uuid_utils.uuid7())
