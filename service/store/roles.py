"""PostgreSQL roles: the schema owner and the service's restricted role.

Two roles, two jobs (docs/database-roles.md):

- The **owner** (e.g. ``pinlife_owner``) owns the database, the tables, the
  append-only triggers on ``events`` and their function. Only the migrations
  (``pinlife migrate``) connect as it: making and altering tables, and the
  rare sanctioned write to old events (migration 0003 labels terminal
  streams with the trigger disabled). A table's owner can disable or drop
  its triggers, so the owner can rewrite history; the running service must
  not be the owner.
- The **app** role (e.g. ``pinlife_app``) is the one ``PINLIFE_DATABASE_URL``
  names when serving. It owns nothing and holds, table by table, exactly the
  privileges the running service uses (``PRIVILEGES``): it can read the log
  and append to it, never update, delete or truncate an event, and it cannot
  alter, disable or drop a trigger or a table, create anything in the
  schema, or set ``session_replication_role`` (superuser only), which would
  silence the triggers.

``grant_statements(role)`` returns the SQL the owner (or a superuser) runs
after every migration to give an existing login role those privileges and
nothing more: per table, it first revokes everything granted directly to the
role, then grants the listed privileges. It cannot take away what the role
gets from PUBLIC or from membership of another role: the app role must not
be a member of the owner role (nor a superuser), and on PostgreSQL 14 and
older the owner must also ``REVOKE CREATE ON SCHEMA public FROM PUBLIC``
(PostgreSQL 15 made that the default).

What the app role may still write, on purpose: the projection and the
heads (``cards``, ``pin_states``, ``terminals``, ``secrets``) are updated in
place by every command; they are protected by MACs (``cards.mac``, and
``terminals.mac`` over a terminal's throttle state) checked
before the service acts, and by ``pinlife check`` (a rebuild from the log).
``requests`` rows past the replay window are deleted. ``events`` is
append-only for the app role by privilege, and for the owner by trigger.

Every table of ``service.store.tables.metadata`` must have an entry in
``PRIVILEGES`` (``grant_statements`` refuses otherwise, and a test checks
it), so a new table cannot be shipped without deciding what the service may
do with it.
"""

from __future__ import annotations

import re

from sqlalchemy.dialects import postgresql

from .tables import metadata

# What the running service needs, table by table. Keep each entry minimal;
# a privilege is added only for a statement the service runs (and row locks,
# SELECT ... FOR UPDATE, need UPDATE; INSERT ... ON CONFLICT DO UPDATE needs
# SELECT, INSERT and UPDATE).
PRIVILEGES: dict[str, tuple[str, ...]] = {
    # the log: read and append, nothing else (no UPDATE, DELETE, TRUNCATE)
    "events": ("SELECT", "INSERT"),
    # the single row of the last position handed out (UPDATE ... RETURNING)
    "log_head": ("SELECT", "UPDATE"),
    # stream heads and the projection: written in place by every command,
    # locked with SELECT ... FOR UPDATE, upserted (protected by cards.mac and terminals.mac)
    "cards": ("SELECT", "INSERT", "UPDATE"),
    "pin_states": ("SELECT", "INSERT", "UPDATE"),
    "secrets": ("SELECT", "INSERT", "UPDATE"),
    "terminals": ("SELECT", "INSERT", "UPDATE"),
    # answers by request id; those past the replay window are pruned
    "requests": ("SELECT", "INSERT", "DELETE"),
    # a check value per key id, written once when a key is first seen
    "key_checks": ("SELECT", "INSERT"),
    # signed checkpoints: each one is new, none is changed
    "checkpoints": ("SELECT", "INSERT"),
    # Merkle subtree roots, written as they complete, never changed (INSERT ... ON CONFLICT DO NOTHING)
    "tree_nodes": ("SELECT", "INSERT"),
    # Alembic's revision row: the service reads it, only migrations write it
    "alembic_version": ("SELECT",),
}

# The table privileges of PostgreSQL 15 and 16 (17 adds MAINTAIN).
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# Tables that are not in the metadata but are in the schema.
EXTRA_TABLES = ("alembic_version",)
SCHEMA = "public"

# A plain lower-case identifier of at most 63 bytes (PostgreSQL's
# NAMEDATALEN - 1), so the name an operator types in CREATE ROLE unquoted is
# the name granted to. Names PostgreSQL reserves for roles, and pg_*, are refused.
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RESERVED_ROLES = frozenset({"public", "none", "current_user", "current_role", "session_user", "postgres"})
_PREPARER = postgresql.dialect().identifier_preparer


class RoleNameError(ValueError):
    pass


def validate_role(name: str) -> str:
    """The role name, if it is a plain lower-case identifier that is not a
    reserved or system role (and not ``postgres``, the usual superuser)."""
    if not isinstance(name, str) or not _ROLE_NAME.fullmatch(name):
        raise RoleNameError(f"role name {name!r}: 1-63 of a-z 0-9 _ (lower case, not starting with a digit)")
    if name in _RESERVED_ROLES or name.startswith("pg_"):
        raise RoleNameError(f"role name {name!r} is reserved")
    return name


def quote(name: str) -> str:
    """A PostgreSQL identifier, quoted where needed (reserved words, upper case)."""
    return _PREPARER.quote(name)


def decided_tables() -> set[str]:
    """The tables the schema has: the metadata's and Alembic's."""
    return set(metadata.tables) | set(EXTRA_TABLES)


def _check_decisions() -> None:
    missing = decided_tables() - set(PRIVILEGES)
    extra = set(PRIVILEGES) - decided_tables()
    if missing or extra:
        raise RuntimeError(
            "service/store/roles.py PRIVILEGES is out of date: "
            f"no grant decision for {sorted(missing)}, decisions for unknown tables {sorted(extra)}"
        )
    for table, privileges in PRIVILEGES.items():
        unknown = set(privileges) - set(TABLE_PRIVILEGES)
        if unknown:
            raise RuntimeError(f"PRIVILEGES[{table!r}]: unknown privileges {sorted(unknown)}")


def _table(table: str, schema: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def grant_statements(app_role: str, schema: str = SCHEMA) -> list[str]:
    """SQL (one statement per item, no terminators) that gives the existing
    role `app_role` exactly the privileges of ``PRIVILEGES`` on the tables of
    `schema`, plus USAGE on the schema and not CREATE. Run by the owner
    (or a superuser) after each migration; running it again is harmless."""
    role = quote(validate_role(app_role))
    _check_decisions()
    out = [
        # USAGE is granted to PUBLIC too; granted here so the role keeps it
        # where an operator has revoked PUBLIC's.
        f"GRANT USAGE ON SCHEMA {quote(schema)} TO {role}",
        # PostgreSQL 15 already revokes CREATE on public from PUBLIC; this
        # revokes a direct grant to the role (no tables, functions, triggers
        # of its own next to the log).
        f"REVOKE CREATE ON SCHEMA {quote(schema)} FROM {role}",
        # No sequence is used by the service (every key is given explicitly).
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quote(schema)} FROM {role}",
    ]
    for table in sorted(PRIVILEGES):
        out.append(f"REVOKE ALL ON TABLE {_table(table, schema)} FROM {role}")
        out.append(f"GRANT {', '.join(PRIVILEGES[table])} ON TABLE {_table(table, schema)} TO {role}")
    return out


def revoke_statements(app_role: str, schema: str = SCHEMA) -> list[str]:
    """SQL that takes back everything ``grant_statements`` gave (before the
    role is dropped, or when a service is retired)."""
    role = quote(validate_role(app_role))
    out = [f"REVOKE ALL ON TABLE {_table(table, schema)} FROM {role}" for table in sorted(PRIVILEGES)]
    out.append(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quote(schema)} FROM {role}")
    out.append(f"REVOKE ALL ON SCHEMA {quote(schema)} FROM {role}")
    return out


def grant_script(app_role: str, schema: str = SCHEMA) -> str:
    """``grant_statements`` as a psql script (for ``pinlife grants ROLE``)."""
    statements = grant_statements(app_role, schema)
    header = (
        f"-- pinlife: privileges of the service role {app_role} (service/store/roles.py).\n"
        f"-- Run as the schema owner after every `pinlife migrate`: pinlife grants {app_role} | psql ...\n"
        "-- The role must own nothing and must not be a member of the owner role.\n"
        "BEGIN;\n"
    )
    return header + "".join(f"{s};\n" for s in statements) + "COMMIT;\n"
