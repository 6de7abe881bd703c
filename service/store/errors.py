"""How database failures are classified: retry the transaction, or tell the
caller the store is unavailable."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class WriteConflict(Exception):
    """A row written by another transaction since this one read it unlocked
    (service/store/unit_of_work.py): retried, then with the rows locked."""


def is_retryable(exc: BaseException) -> bool:
    """A conflict that a fresh attempt of the same transaction resolves."""
    if isinstance(exc, WriteConflict):
        return True
    if isinstance(exc, IntegrityError):
        return True  # e.g. two instances enrolling one card, or one request id, at once
    if isinstance(exc, OperationalError):
        code = getattr(exc.orig, "sqlstate", None)
        return code in ("40001", "40P01", "55P03") or "database is locked" in str(exc.orig)
    return False


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True  # no pooled connection came free within pool_timeout
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    return isinstance(exc, OperationalError) and (code == "" or code.startswith(("08", "57P")))
