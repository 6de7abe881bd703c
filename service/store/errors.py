"""How database failures are classified: retry the transaction, or tell the
caller the store is unavailable."""

from __future__ import annotations

import getpass
import os
import re

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


# --- what an operator is told when the database cannot be used --------------------
# A command or a server that cannot use its database says so in one line,
# naming the cause and the fix (service/cli/exits.py: exit 2 for a problem a
# person must fix, 3 for a database that may come back by itself).


class StoreRefused(Exception):
    """The database refuses this configuration: it does not exist, the login
    or the password is wrong, the role lacks a privilege, the SQLite file
    cannot be made or is not a database. A person must act."""


class StoreUnavailable(Exception):
    """The database cannot be reached now (not running, restarting, the
    network): it may come back by itself."""


# SQLSTATEs that say "later" rather than "never": connection exceptions,
# operator intervention (shutdown, starting up), too many connections, out of memory.
_TRANSIENT_STATES = ("08", "57P", "53")


def _where(url: str) -> tuple[str, str, str]:
    """The user, the host:port and the database a URL names (for messages)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    host = u.host or os.environ.get("PGHOST") or "localhost"
    return u.username or os.environ.get("PGUSER") or getpass.getuser(), f"{host}:{u.port or 5432}", u.database or ""


def _driver_text(orig: BaseException) -> str:
    """The driver's reason, without libpq's preamble and on one line."""
    text = " ".join(str(orig).strip().splitlines()[0].split()) if str(orig).strip() else type(orig).__name__
    text = re.sub(r"^connection failed: (connection to server (at|on) .*? failed: )?", "", text)
    return text.removeprefix("FATAL: ").strip()


def diagnose(exc: BaseException, url: str) -> StoreRefused | StoreUnavailable | None:
    """What an error met while connecting to (or first reading) the database
    means to an operator, as one line naming the cause and the fix; None for
    an error that is not about reaching or being let into the database."""
    from sqlalchemy.engine import make_url

    if isinstance(exc, (StoreRefused, StoreUnavailable)):
        return exc
    if make_url(url).drivername.startswith("sqlite"):
        return _diagnose_sqlite(exc, url)
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(f"the database at {_where(url)[1]} gave no connection in time: it is overloaded or unreachable")
    orig = getattr(exc, "orig", None)
    if not isinstance(exc, DBAPIError) or orig is None:
        return None
    user, where, database = _where(url)
    reason = _driver_text(orig)
    state = getattr(orig, "sqlstate", None) or ""
    if state == "3D000" or re.search(r'database ".*" does not exist', reason):
        return StoreRefused(
            f'the database "{database}" does not exist on {where}: create it '
            f"(createdb -h {where.rsplit(':', 1)[0]} -p {where.rsplit(':', 1)[1]} -U {user} {database}, "
            "or CREATE DATABASE as a superuser), then run `pinlife migrate`"
        )
    if state.startswith("28") or re.search(
        r"password authentication failed|role \".*\" does not exist|no password supplied|"
        r"authentication failed|no pg_hba.conf entry",
        reason,
    ):
        return StoreRefused(
            f'PostgreSQL at {where} did not let user "{user}" in ({reason}): check the user and password '
            "of PINLIFE_DATABASE_URL (postgresql://USER:PASSWORD@HOST/DB, or PGPASSWORD / ~/.pgpass) "
            "and the server's pg_hba.conf"
        )
    if state == "42501" or "permission denied" in reason:
        return StoreRefused(
            f'user "{user}" may not do this on {where}/{database} ({reason}): run `pinlife migrate` as the '
            f"schema owner, and give the service's role its privileges with `pinlife grants {user}` "
            "(docs/database-roles.md)"
        )
    if isinstance(exc, OperationalError) and (state == "" or state.startswith(_TRANSIENT_STATES)):
        return StoreUnavailable(
            f"the database at {where} cannot be reached ({reason}): start PostgreSQL there, "
            "or correct the host and port of PINLIFE_DATABASE_URL"
        )
    return None


def _diagnose_sqlite(exc: BaseException, url: str) -> StoreRefused | StoreUnavailable | None:
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if isinstance(exc, OSError):  # making the file or its folder (engine.prepare_sqlite_file)
        return StoreRefused(
            f"cannot make the SQLite store {path}: {exc.strerror or exc}: PINLIFE_DATABASE_URL must name "
            "a file in a folder this user may write (sqlite:///FILE)"
        )
    orig = getattr(exc, "orig", None)
    if not isinstance(exc, DBAPIError) or orig is None:
        return None
    name = getattr(orig, "sqlite_errorname", "")
    if name in ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"):
        return StoreRefused(
            f"cannot open the SQLite store {path} ({orig}): check that it is a file this user may read "
            "and write, in a folder it may write"
        )
    if name.startswith("SQLITE_READONLY"):
        return StoreRefused(
            f"the SQLite store {path} is read-only for this user ({orig}): give it (and its folder, "
            "its -wal and -shm files) to the user pinlife runs as"
        )
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return StoreRefused(f"{path} is not a usable SQLite database ({orig}): PINLIFE_DATABASE_URL names the wrong file")
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        return StoreUnavailable(f"the SQLite store {path} is locked by another process ({orig}): try again")
    return None
