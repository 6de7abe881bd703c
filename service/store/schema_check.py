"""The database's schema must be the one this code was written for: a server
on an unmigrated database, or on one migrated by older or newer code, would
report SERVING and fail every call. The server refuses to start instead
(service/api/server.py), naming what to run.

The code's revisions are read from the migration files as Alembic finds
them (their module-level `revision` and `down_revision`), without loading
Alembic into a server that never migrates (tests/store/test_migrations.py
checks both views agree)."""

from __future__ import annotations

import ast
from functools import cache
from importlib.resources import files
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from .engine import connected_once

# Alembic's scripts: migrations/ in a checkout, installed as the package pinlife.migrations.
MIGRATIONS = Path(str(files("pinlife.migrations")))
VERSIONS = MIGRATIONS / "versions"
_MISSING = object()

MIGRATE = "run `pinlife migrate` (`make migrate`) with the same PINLIFE_DATABASE_URL"


class SchemaMismatch(Exception):
    """The database's Alembic revision is not the code's head (or cannot be read).
    ahead: the database was migrated by newer code (migrating cannot help)."""

    def __init__(self, message: str, *, ahead: bool = False):
        super().__init__(message)
        self.ahead = ahead


def code_revisions(folder: Path = VERSIONS) -> tuple[set[str], set[str]]:
    """Every revision of this code's migrations, and the heads among them
    (those no migration builds on)."""
    known: set[str] = set()
    below: set[str] = set()
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith(("__init__", ".#")):
            continue  # Alembic skips these too
        values = _module_values(path, ("revision", "down_revision"))
        revision, down = values.get("revision"), values.get("down_revision", _MISSING)
        if not isinstance(revision, str) or down is _MISSING:
            raise SchemaMismatch(f"{path.name}: a migration without `revision` and `down_revision`")
        if revision in known:
            raise SchemaMismatch(f"{path.name}: revision {revision} is defined twice")
        known.add(revision)
        below.update(down if isinstance(down, (tuple, list)) else () if down is None else (down,))
    if not known:
        raise SchemaMismatch(f"no migrations in {folder}: the installation is incomplete")
    return known, known - below


@cache
def installed_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """code_revisions of the installed migrations, read once a process: they
    do not change while it runs (each server an e2e test starts read them again)."""
    known, heads = code_revisions()
    return frozenset(known), frozenset(heads)


def _module_values(path: Path, names: tuple[str, ...]) -> dict[str, object]:
    """The literal values last assigned to these names at a module's top level."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        values: dict[str, object] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    values[target.id] = ast.literal_eval(value)
        return values
    except (OSError, SyntaxError, ValueError) as exc:
        raise SchemaMismatch(f"{path.name}: cannot read its revision ({type(exc).__name__})") from exc


def check_schema(url: str) -> None:
    """Raise SchemaMismatch unless the database's alembic_version is exactly
    the head of this code's migrations; StoreRefused or StoreUnavailable
    (service/store/errors.py) when the database cannot be read."""
    known, heads = installed_revisions()
    try:
        with connected_once(url) as conn:
            current: set[str] = set()
            if inspect(conn).has_table("alembic_version"):
                current = {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except SQLAlchemyError as exc:  # not a connection problem (connected_once says those): the revision unreadable
        raise SchemaMismatch(f"cannot read the database's schema revision: {' '.join(str(exc).split())[:300]}") from exc
    if current == heads:
        return
    head = ", ".join(sorted(heads))
    if not current:
        raise SchemaMismatch(f"the database is not migrated (this code's schema is revision {head}): {MIGRATE}")
    unknown = sorted(current - known)
    if unknown:
        raise SchemaMismatch(
            f"the database is at schema revision {', '.join(unknown)}, newer than this code's {head}: "
            "it was migrated by a newer pinlife; run that version (or downgrade the database with it)",
            ahead=True,
        )
    raise SchemaMismatch(f"the database is at schema revision {', '.join(sorted(current))}, behind this code's {head}: {MIGRATE}")
