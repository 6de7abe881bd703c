"""A used test database on PostgreSQL made as its template was, instead of
dropped and made again (tests/conftest.py, PgDatabases): making and
dropping one cost the server about 0.11 s of CPU (CREATE DATABASE copies the
template's files through the WAL, DROP DATABASE takes a checkpoint); a
reset costs about 0.02 s.

A reset is taken only when nothing but rows changed: the database's
catalog (its relations, columns, indexes, constraints, triggers and whether
they are enabled, functions, schemas, privileges, owners, settings,
extensions) and its Alembic revision must read exactly as the template's
(FINGERPRINT). Then every connection to it is ended (as DROP DATABASE ...
WITH (FORCE) would), every table is emptied (TRUNCATE, with triggers off:
the log refuses TRUNCATE) but the Alembic revision (equal: the fingerprint
says so), the template's log head is put back and the planner's statistics
from the test's rows are forgotten. A database that fails any of this is dropped as before."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
  SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || pg_get_userbyid(c.relowner)
         || ' ' || coalesce(c.relacl::text, '') || ' ' || coalesce(array_to_string(c.reloptions, ','), '') AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
     AND n.nspname NOT LIKE 'pg_temp%'
  UNION ALL
  SELECT 'col ' || a.attrelid::regclass::text || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' ' || a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || coalesce(a.attacl::text, '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'idx ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
   WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'con ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'trg ' || tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text || ' ' || pg_get_triggerdef(oid)
    FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'fn ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) || ' ' || coalesce(p.proacl::text, '')
         || ' ' || pg_get_userbyid(p.proowner)
    FROM pg_proc p WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
  UNION ALL
  SELECT 'ns ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '') FROM pg_namespace
  UNION ALL SELECT 'ext ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL SELECT 'defacl ' || defaclacl::text FROM pg_default_acl
  UNION ALL
  SELECT 'set ' || setrole::text || ' ' || setconfig::text FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  SELECT 'db ' || coalesce(datacl::text, '') || ' ' || pg_get_userbyid(datdba) || ' ' || datallowconn::text
         || ' ' || datconnlimit::text
    FROM pg_database WHERE datname = current_database()
  UNION ALL SELECT 'alembic ' || version_num FROM alembic_version
) fingerprint
"""

# Tables not emptied: the Alembic revision is left as it is, the log head put back as the template's.
SEEDED = ("alembic_version", "log_head")


@dataclass(frozen=True)
class Template:
    fingerprint: str
    tables: tuple[str, ...]  # every table of the public schema
    log_head: tuple[dict, ...]  # the template's rows of log_head

    @classmethod
    def read(cls, url: str) -> Template:
        """What a reset database must match and be given back (read on a
        connection closed at once: CREATE DATABASE ... TEMPLATE refuses a
        template anyone is connected to)."""
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                fingerprint = conn.execute(text(FINGERPRINT)).scalar_one()
                tables = tuple(
                    conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).scalars()
                )
                log_head = tuple(dict(r._mapping) for r in conn.execute(text("SELECT * FROM log_head")))
        finally:
            engine.dispose()
        return cls(fingerprint, tables, log_head)


def reset(admin, url: str, name: str, template: Template) -> bool:
    """Database `name` (at `url`) made as the template was; False, having
    changed nothing it matters to have changed, if it cannot be: the caller
    drops it. `admin`: an AUTOCOMMIT connection to another database."""
    admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    deadline = time.monotonic() + 5
    while admin.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n"), {"n": name}).scalar_one():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            fingerprint = conn.execute(text(FINGERPRINT)).scalar_one()
            conn.rollback()
            if fingerprint != template.fingerprint:
                return False
            with conn.begin():
                conn.execute(text("SET LOCAL session_replication_role = replica"))  # triggers off: the log refuses TRUNCATE
                conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                emptied = [t for t in template.tables if t not in SEEDED]
                conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in emptied)))
                conn.execute(text("DELETE FROM log_head"))
                for row in template.log_head:
                    columns = ", ".join(f'"{c}"' for c in row)
                    conn.execute(text(f"INSERT INTO log_head ({columns}) VALUES ({', '.join(':' + c for c in row)})"), row)
                conn.execute(
                    text(
                        "DELETE FROM pg_statistic WHERE starelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)"
                    )
                )
            return True
    finally:
        engine.dispose()
