"""The database's schema must be the one this code was written for: a server
on an unmigrated database, or on one migrated by older or newer code, would
report SERVING and fail every call. The server refuses to start instead
(service/api/server.py), naming what to run."""

from __future__ import annotations

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from service.store.engine import make_engine
from service.store.migrate import alembic_config

MIGRATE = "run `pinlife migrate` (`make migrate`) with the same PINLIFE_DATABASE_URL"


class SchemaMismatch(Exception):
    """The database's Alembic revision is not the code's head (or cannot be read)."""


def check_schema(url: str) -> None:
    """Raise SchemaMismatch unless the database's alembic_version is exactly
    the head of this code's migrations."""
    script = ScriptDirectory.from_config(alembic_config(url))
    heads = set(script.get_heads())
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        raise SchemaMismatch(f"cannot read the database's schema revision ({type(exc).__name__}); is it reachable?") from exc
    finally:
        engine.dispose()
    if current == heads:
        return
    head = ", ".join(sorted(heads))
    if not current:
        raise SchemaMismatch(f"the database is not migrated (this code's schema is revision {head}): {MIGRATE}")
    known = {s.revision for s in script.walk_revisions()}
    unknown = sorted(current - known)
    if unknown:
        raise SchemaMismatch(
            f"the database is at schema revision {', '.join(unknown)}, newer than this code's {head}: "
            "it was migrated by a newer pinlife; run that version (or downgrade the database with it)"
        )
    raise SchemaMismatch(f"the database is at schema revision {', '.join(sorted(current))}, behind this code's {head}: {MIGRATE}")
