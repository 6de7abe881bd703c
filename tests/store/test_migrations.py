"""The Alembic migrations make exactly the schema of service/store/tables.py,
on both backends, and can be undone and redone."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, text

from pinlife.domain.pins import PinType
from pinlife.runtime import child
from pinlife.store.engine import normalize_url
from pinlife.store.migrate import alembic_config, downgrade, upgrade
from pinlife.store.schema_check import SchemaMismatch, code_revisions
from pinlife.store.tables import metadata
from tests.keys import INTEGRITY

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
                triggers = set(conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars())
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


def _write_0002_store(url: str, keys) -> None:
    """A store as revision 0002 left it: a card whose CardEnrolled is the v1
    shape, a failed verify, a terminal stream, PIN verifiers; hashes as the
    service computed them then."""
    from datetime import datetime

    from pinlife.domain.chain import GENESIS_HASH, hashed_envelope
    from pinlife.domain.chain import legacy_hash as event_hash  # how events were chained before 0005
    from pinlife.keys.ring import SecretRef
    from tests.store.helpers import CORRECT, USER

    at = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    rows = [  # stream, version, type, pin type, payload
        ("card-old", 1, "CardEnrolled", None, {"pin_types": [t.value for t in CORRECT]}),
        (
            "card-old",
            2,
            "PinVerificationFailed",
            "user_certificate",
            {"purpose": "verify", "consecutive_failures": 1, "remaining_tries": 2},
        ),
        (
            "terminal:reader-9",
            1,
            "AccessDenied",
            None,
            {"rpc": "/pinlife.v1.CounterService/EnrollCard", "role": "medical_reader", "card_id": "card-old"},
        ),
    ]
    engine = create_engine(normalize_url(url))
    prev: dict[str, str] = {}
    with engine.begin() as conn:
        for position, (stream, version, event_type, pin_type, payload) in enumerate(rows, start=1):
            env = hashed_envelope(
                stream,
                version,
                f"00000000-0000-0000-0000-00000000000{position}",
                event_type,
                1,
                at,
                pin_type,
                "ward_office",
                "counter-1",
                f"req-old-{position}",
                payload,
            )
            digest = event_hash(prev.get(stream, GENESIS_HASH), env)
            conn.execute(
                text(
                    "INSERT INTO events (position, card_id, version, event_id, event_type, schema_version, occurred_at,"
                    " pin_type, channel, terminal_id, request_id, payload, prev_hash, hash) VALUES (:p, :s, :v, :id,"
                    " :t, 1, :at, :pt, 'ward_office', 'counter-1', :r, :payload, :prev, :h)"
                ),
                {
                    "p": position,
                    "s": stream,
                    "v": version,
                    "id": env["event_id"],
                    "t": event_type,
                    "at": at,
                    "pt": pin_type,
                    "r": env["request_id"],
                    "payload": json.dumps(payload),
                    "prev": prev.get(stream, GENESIS_HASH),
                    "h": digest,
                },
            )
            prev[stream] = digest
        conn.execute(text("UPDATE log_head SET position = 3"))
        conn.execute(text("INSERT INTO cards VALUES ('card-old', 2, :h, 'active', :at)"), {"h": prev["card-old"], "at": at})
        conn.execute(text("INSERT INTO terminals VALUES ('reader-9', 1, :h)"), {"h": prev["terminal:reader-9"]})
        for t in CORRECT:
            failures = 1 if t is USER else 0
            conn.execute(
                text("INSERT INTO pin_states VALUES ('card-old', :t, 'active', :f, :r, NULL, :v)"),
                {"t": t.value, "f": failures, "r": 3 - failures if t is not PinType.SIGNATURE else 5, "v": 2 if failures else 1},
            )
            digest = keys.make(SecretRef.pin("card-old", t), CORRECT[t]).digest
            conn.execute(
                text("INSERT INTO pin_verifiers VALUES ('card-old', :t, :k, :d, 1)"),
                {"t": t.value, "k": keys.current, "d": digest},
            )
    engine.dispose()


def test_an_existing_0002_store_migrates_and_its_old_events_read_as_current(databases, backend, keys):
    """Stream ids, stream kinds, secrets and the v1 CardEnrolled shape: the
    data of a store written before revision 0003 survives it, its chains
    still verify, and the rebuild (which upcasts) equals the projection."""
    from pinlife.app.batch import ThreadRunner
    from pinlife.domain.events import CardEnrolled
    from pinlife.domain.state import CardStatus
    from pinlife.domain.upcasting import event_from_stored
    from pinlife.store.event_store import EventStore
    from pinlife.store.rechain import rechain
    from tests.clock import FakeClock
    from tests.store.helpers import CORRECT, USER, run_ok, verify

    url = databases.create(backend, migrate=False)
    upgrade(url, "0002")
    _write_0002_store(url, keys)
    upgrade(url)
    assert _diff(url) == []
    store = EventStore(url)
    try:
        assert store.integrity.first_broken_link(INTEGRITY) is not None  # unkeyed until re-chained under the key
        assert rechain(store, INTEGRITY) > 0
        assert rechain(store, INTEGRITY) == 0
        old = store.log.stream("card-old")
        assert [(e.stream_kind, e.schema_version) for e in old] == [("card", 1), ("card", 1)]
        assert event_from_stored(old[0].event_type, old[0].schema_version, None, old[0].payload) == CardEnrolled(
            tuple(CORRECT), ward=None
        )
        assert [e.stream_kind for e in store.log.stream("terminal:reader-9")] == ["terminal"]
        assert store.integrity.first_broken_link(INTEGRITY) is None
        rebuilt = store.cards.rebuild()
        assert rebuilt == store.cards.projection()
        card = rebuilt["card-old"]
        assert (card.status, card.ward, card.pin(USER).consecutive_failures) == (CardStatus.ACTIVE, None, 1)
        # the verifiers moved to the secrets table: the right PIN is still right
        [answer] = run_ok(ThreadRunner(store, keys, FakeClock()), verify("card-old", USER, CORRECT[USER]))
        assert answer.outcome.remaining_tries == 3 and answer.stream_version == 3
        # re-chaining moved the terminal's head, and MACed its row anew: the terminal is served
        from pinlife.app.handlers import Caller

        reader = Caller("medical_reader", "reader-9")
        [answer] = run_ok(ThreadRunner(store, keys, FakeClock()), verify("card-old", USER, CORRECT[USER]), caller=reader)
        assert answer.stream_version == 4
        assert store.integrity.first_broken_link(INTEGRITY) is None and store.cards.rebuild() == store.cards.projection()
    finally:
        store.close()


def test_the_server_reads_the_code_s_revisions_from_the_migration_files_as_alembic_does():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    known, heads = code_revisions()
    assert heads == set(script.get_heads())
    assert known == {s.revision for s in script.walk_revisions()}


def _modules_loaded(conn) -> None:
    """In a child of runtime/child.py: the top-level modules it holds."""
    conn.send(sorted({name.split(".")[0] for name, module in sys.modules.items() if module is not None}))


def test_a_server_on_sqlite_loads_neither_alembic_nor_psycopg_nor_prometheus_nor_holidays_nor_rich(databases):
    """Memory: each costs the server (and psycopg its writer process too)
    several MB it does not use on SQLite without metrics; the holidays
    library's dates are computed in a child interpreter (config/offices.py);
    rich, which structlog imports when it can, serves only the other
    commands' tables (cli/__init__.py, and runtime/child.py for the children)."""
    url = databases.create("sqlite")
    probe = (
        "import sys\n"
        "sys.argv = ['pinlife', 'serve']\n"
        "import pinlife.cli.main, pinlife.cli.serve, pinlife.bootstrap.serving, pinlife.app.writer_process\n"
        "import pinlife.store.checkpoints, pinlife.store.hot_sql, pinlife.store.maintenance\n"
        "from pinlife.store.schema_check import check_schema\n"
        f"check_schema({url!r})\n"
        "from datetime import date\n"
        "from pinlife.config.offices import load_policy\n"
        "from pinlife.domain.policy import ThrottlePolicy\n"
        "assert load_policy(None, ThrottlePolicy(), date.today()).calendar.holidays\n"
        "loaded = {m.split('.')[0] for m, module in sys.modules.items() if module is not None}\n"
        "print(sorted(loaded & {'alembic', 'psycopg', 'prometheus_client', 'holidays', 'rich'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    proc, conn = child.start(_modules_loaded, ())
    try:
        loaded = conn.recv()
        assert "structlog" in loaded and "rich" not in loaded
    finally:
        conn.close()
        proc.join(10)


def _migration(folder, name: str, body: str) -> None:
    (folder / name).write_text(body)


def test_revisions_are_read_as_alembic_reads_them(tmp_path):
    _migration(tmp_path, "a.py", 'revision = "a"\ndown_revision = None\n')
    _migration(tmp_path, "b.py", 'revision: str = "b"  # noqa\ndown_revision: str | None = "a"\n')
    _migration(tmp_path, "c.py", '"""revision = "not this"\n"""\nrevision = "c"\ndown_revision = "a"\n')
    _migration(tmp_path, "d.py", 'revision = "d"\ndown_revision = ("b", "c")  # a merge\n')
    _migration(tmp_path, "__init__.py", "")
    assert code_revisions(tmp_path) == ({"a", "b", "c", "d"}, {"d"})


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "no migrations in"),
        ({"a.py": "x = 1\n"}, "a migration without `revision` and `down_revision`"),
        ({"a.py": 'revision = "a"\ndown_revision = None\n', "b.py": 'revision = "a"\ndown_revision = None\n'}, "defined twice"),
        ({"a.py": 'revision = "a"\ndown_revision = OTHER\n'}, "cannot read its revision"),
    ],
)
def test_migration_files_that_cannot_be_read_refuse_to_start(tmp_path, files, message):
    for name, body in files.items():
        _migration(tmp_path, name, body)
    with pytest.raises(SchemaMismatch, match=message):
        code_revisions(tmp_path)
