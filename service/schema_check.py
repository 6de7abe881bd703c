"""The database's schema must be the one this code was written for: a server
on an unmigrated database, or on one migrated by older or newer code, would
report SERVING and fail every call. The server refuses to start instead
(service/api/server.py), naming what to run.

The code's revisions are read from the migration files as Alembic finds
them (`revision = "..."`, `down_revision = ...`), without loading Alembic
into a server that never migrates (tests/store/test_migrations.py checks
both views agree)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from service.store.engine import make_engine

VERSIONS = Path(__file__).resolve().parents[1] / "migrations" / "versions"
_REVISION = re.compile(r"^revision\s*(?::[^=]+)?=\s*[\"']([^\"']+)[\"']\s*$", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*(?::[^=]+)?=\s*(?:None|[\"']([^\"']+)[\"'])\s*$", re.M)

MIGRATE = "run `pinlife migrate` (`make migrate`) with the same PINLIFE_DATABASE_URL"


class SchemaMismatch(Exception):
    """The database's Alembic revision is not the code's head (or cannot be read)."""


def code_revisions(folder: Path = VERSIONS) -> tuple[set[str], set[str]]:
    """Every revision of this code's migrations, and the heads among them
    (those no migration builds on)."""
    known: set[str] = set()
    below: set[str] = set()
    for path in sorted(folder.glob("*.py")):
        body = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(body), _DOWN_REVISION.search(body)
        if revision is None or down is None:
            raise SchemaMismatch(f'{path.name}: no `revision = "..."` and `down_revision = ...` line')
        known.add(revision.group(1))
        if down.group(1):
            below.add(down.group(1))
    return known, known - below


def check_schema(url: str) -> None:
    """Raise SchemaMismatch unless the database's alembic_version is exactly
    the head of this code's migrations."""
    known, heads = code_revisions()
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            current: set[str] = set()
            if inspect(conn).has_table("alembic_version"):
                current = {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except SQLAlchemyError as exc:
        raise SchemaMismatch(f"cannot read the database's schema revision ({type(exc).__name__}); is it reachable?") from exc
    finally:
        engine.dispose()
    if current == heads:
        return
    head = ", ".join(sorted(heads))
    if not current:
        raise SchemaMismatch(f"the database is not migrated (this code's schema is revision {head}): {MIGRATE}")
    unknown = sorted(current - known)
    if unknown:
        raise SchemaMismatch(
            f"the database is at schema revision {', '.join(unknown)}, newer than this code's {head}: "
            "it was migrated by a newer pinlife; run that version (or downgrade the database with it)"
        )
    raise SchemaMismatch(f"the database is at schema revision {', '.join(sorted(current))}, behind this code's {head}: {MIGRATE}")
