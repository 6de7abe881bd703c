"""The Alembic migrations make exactly the schema of service/store/tables.py,
on both backends, and can be undone and redone."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, text

from service.store.engine import normalize_url
from service.store.migrate import alembic_config, downgrade, upgrade
from service.store.tables import metadata

TABLES = {"cards", "events", "log_head", "pin_states", "secrets", "requests", "terminals"}


def _diff(url: str, target: MetaData = metadata) -> list:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            # No noise filtering is needed: the JSON/JSONB variant compares
            # equal on both backends and the naming convention of tables.py
            # gives the migration's constraint and index names. Should a
            # future Alembic report a variant-only type difference, filter
            # exactly that here and nothing else.
            return compare_metadata(ctx, target)
    finally:
        engine.dispose()


def _schema_facts(url: str) -> dict:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            head = conn.execute(text("SELECT id, position FROM log_head")).all() if "log_head" in tables else None
            if conn.dialect.name == "postgresql":
                triggers = set(
                    conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars()
                )
                functions = set(conn.execute(text("SELECT proname FROM pg_proc WHERE proname = 'events_append_only'")).scalars())
            else:
                triggers = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
                functions = set()
            revision = MigrationContext.configure(conn).get_current_revision()
        return {"tables": tables, "head": head, "triggers": triggers, "functions": functions, "revision": revision}
    finally:
        engine.dispose()


def _expected_triggers(url: str) -> set[str]:
    if normalize_url(url).startswith("postgresql"):
        return {"events_no_update_delete", "events_no_truncate"}
    return {"events_no_update", "events_no_delete"}


def _append_only_holds(url: str) -> bool:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (position, stream_id, stream_kind, version, event_id, event_type, schema_version,"
                    " occurred_at, pin_type, channel, terminal_id, request_id, payload, prev_hash, hash)"
                    " VALUES (1, 'c', 'card', 1, 'e', 'CardEnrolled', 1, CURRENT_TIMESTAMP, NULL, 'x', 't', 'r',"
                    " '{}', 'p', 'h')"
                )
            )
            conn.commit()
            try:
                with conn.begin():
                    conn.execute(text("UPDATE events SET channel = 'changed'"))
            except Exception as exc:  # noqa: BLE001
                return "append-only" in str(exc)
            return False
    finally:
        engine.dispose()


def test_single_head():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, heads
    assert len(script.get_bases()) == 1
    # a linear history: every revision but the base has exactly one parent
    for rev in script.walk_revisions():
        assert rev.down_revision is None or isinstance(rev.down_revision, str), rev


def test_upgrade_matches_tables_py(db_url):
    assert _diff(db_url) == []
    facts = _schema_facts(db_url)
    assert TABLES <= facts["tables"]
    assert facts["head"] == [(1, 0)]
    assert _expected_triggers(db_url) <= facts["triggers"]
    assert facts["revision"] == ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()


def test_comparison_can_see_a_difference(db_url):
    """The check above is not vacuous: a changed metadata is reported."""
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        copy = table.to_metadata(changed)
        if table.name == "events":
            copy.append_column(Column("extra", Integer, nullable=True))
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(db_url, changed)}
    assert "add_column" in kinds


def test_downgrade_to_base_and_upgrade_again(db_url):
    downgrade(db_url, "base")
    facts = _schema_facts(db_url)
    assert not (TABLES & facts["tables"]), facts["tables"]
    assert not (_expected_triggers(db_url) & facts["triggers"])
    assert facts["functions"] == set()
    assert facts["revision"] is None

    upgrade(db_url)
    assert _diff(db_url) == []
    facts = _schema_facts(db_url)
    assert facts["head"] == [(1, 0)]
    assert _expected_triggers(db_url) <= facts["triggers"]
    assert _append_only_holds(db_url)
