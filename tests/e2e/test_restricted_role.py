"""The service under a restricted PostgreSQL role (service/store/roles.py,
docs/database-roles.md): a database migrated by the owner, a login role
given only grant_statements(role); the real server (`pinlife serve`, writer
process) runs every kind of command as that role, and the role cannot
rewrite history: no UPDATE, DELETE or TRUNCATE of events, no disabling or
dropping the append-only triggers, no DDL, no session_replication_role."""

from __future__ import annotations

import os
import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from pinlife.app.batch import ThreadRunner
from pinlife.runtime.clock import system_clock
from pinlife.store import checkpoints
from pinlife.store.check import check_store
from pinlife.store.event_store import EventStore
from pinlife.store.roles import (
    PRIVILEGES,
    TABLE_PRIVILEGES,
    RoleNameError,
    grant_script,
    grant_statements,
    revoke_statements,
    validate_role,
)
from pinlife.store.tables import metadata
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from tests.conftest import make_key_file
from tests.e2e.harness import Client, ProcessServer
from tests.keys import INTEGRITY
from tests.store.helpers import CORRECT, enroll, run_ok, verify
from tests.store.helpers import USER as DOMAIN_USER

USER, SIGN = pb.PIN_TYPE_USER_CERTIFICATE, pb.PIN_TYPE_SIGNATURE
NAKA, TSURUMI = "naka-ward-office", "tsurumi-ward-office"  # TSURUMI does not serve ward naka
MY_NUMBER_CARD = pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)
# The append-only triggers of migration 0001.
TRIGGERS = ("events_no_update_delete", "events_no_truncate")


def _connect(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        dbname=u.database,
        autocommit=True,
        connect_timeout=3,
    )


class Restricted:
    def __init__(self, owner_url: str, role: str):
        self.owner_url, self.role = owner_url, role
        self.url = make_url(owner_url).set(username=role, password=None).render_as_string(hide_password=False)


@pytest.fixture
def restricted(databases):
    """A migrated throwaway database (owned by the admin role that migrated
    the template) and a fresh login role with only grant_statements(role);
    the role is dropped at the end, also when the test fails."""
    owner_url = databases.create("postgres")
    role = f"pinlife_app_test_{uuid.uuid4().hex[:10]}"
    admin = _connect(owner_url)
    try:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        try:
            for statement in grant_statements(role):
                admin.execute(statement)
            yield Restricted(owner_url, role)
        finally:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    finally:
        admin.close()


# -- the grant decisions (no database) ------------------------------------------
def test_every_table_has_a_grant_decision():
    assert set(PRIVILEGES) == set(metadata.tables) | {"alembic_version"}


def test_the_app_role_may_never_change_or_remove_an_event_nor_own_anything():
    assert PRIVILEGES["events"] == ("SELECT", "INSERT")
    for table, privileges in PRIVILEGES.items():
        assert set(privileges) <= {"SELECT", "INSERT", "UPDATE", "DELETE"}, table
    script = grant_script("pinlife_app")
    for word in ("TRUNCATE", "REFERENCES", "TRIGGER", "OWNER", "CREATE ROLE", "GRANT ALL"):
        assert word not in script.replace("REVOKE ALL", "").replace("REVOKE CREATE", "")
    assert "REVOKE CREATE ON SCHEMA public FROM pinlife_app;" in script


@pytest.mark.parametrize(
    "name", ["", "Pinlife", "pinlife-app", "1app", "app;drop", 'a"b', "public", "postgres", "pg_monitor", "x" * 64, None]
)
def test_role_names_are_validated(name):
    with pytest.raises(RoleNameError):
        grant_statements(name)
    with pytest.raises(RoleNameError):
        revoke_statements(name)


def test_identifiers_are_quoted():
    assert validate_role("user") == "user"
    statements = grant_statements("user")  # a reserved word: quoted
    assert 'GRANT SELECT, INSERT ON TABLE public.events TO "user"' in statements


# -- on PostgreSQL ----------------------------------------------------------------
@pytest.mark.postgres
def test_the_role_has_exactly_the_granted_privileges(restricted):
    with _connect(restricted.owner_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables == set(PRIVILEGES)
        held = {
            table: tuple(
                p
                for p in TABLE_PRIVILEGES
                if conn.execute("SELECT has_table_privilege(%s, %s, %s)", (restricted.role, f"public.{table}", p)).fetchone()[0]
            )
            for table in tables
        }
        assert held == {t: tuple(p for p in TABLE_PRIVILEGES if p in PRIVILEGES[t]) for t in tables}
        schema = conn.execute(
            "SELECT has_schema_privilege(%s, 'public', 'USAGE'), has_schema_privilege(%s, 'public', 'CREATE')",
            (restricted.role, restricted.role),
        ).fetchone()
        assert schema == (True, False)
        sequences = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'S' AND n.nspname = 'public' AND (has_sequence_privilege(%s, c.oid, 'USAGE') "
            "OR has_sequence_privilege(%s, c.oid, 'UPDATE'))",
            (restricted.role, restricted.role),
        ).fetchall()
        assert sequences == []
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = %s", (restricted.role,)
        ).fetchone()[0]
        assert owned == 0
        # revoke_statements takes everything back
        for statement in revoke_statements(restricted.role):
            conn.execute(statement)
        left = conn.execute(
            "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = %s", (restricted.role,)
        ).fetchone()[0]
        assert left == 0


def _refusal(conn: psycopg.Connection, statement: str) -> str | None:
    """The error a statement gets (SQLSTATE and message), or None if it ran.
    Anything that runs is rolled back."""
    try:
        with conn.transaction():
            conn.execute(statement)
            raise psycopg.Rollback()
    except psycopg.Error as exc:
        return f"{exc.sqlstate} {exc.diag.message_primary}"
    return None


@pytest.mark.postgres
def test_the_restricted_role_cannot_rewrite_history(restricted):
    with _connect(restricted.url) as conn:
        conn.execute("SET lock_timeout = '5s'")
        refused = {
            # the triggers: only the table's owner may disable or drop them
            "ALTER TABLE events DISABLE TRIGGER ALL": "42501 must be owner of table events",
            f"ALTER TABLE events DISABLE TRIGGER {TRIGGERS[0]}": "42501 must be owner of table events",
            f"ALTER TABLE events DISABLE TRIGGER {TRIGGERS[1]}": "42501 must be owner of table events",
            f"DROP TRIGGER {TRIGGERS[0]} ON events": "42501 must be owner of relation events",
            "DROP FUNCTION events_append_only()": "42501 must be owner of function events_append_only",
            "CREATE TRIGGER sneaky BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_append_only()": "42501 permission denied for table events",
            # the table itself
            "DROP TABLE events": "42501 must be owner of table events",
            "ALTER TABLE events RENAME TO events_old": "42501 must be owner of table events",
            f"ALTER TABLE events OWNER TO {restricted.role}": "42501 must be owner of table events",
            # the rows: refused by privilege, before the triggers (whose refusal says "append-only")
            "UPDATE events SET payload = '{}' WHERE position = 1": "42501 permission denied for table events",
            "DELETE FROM events": "42501 permission denied for table events",
            "TRUNCATE events": "42501 permission denied for table events",
            # replica mode would skip the triggers: superuser only
            "SET session_replication_role = replica": '42501 permission denied to set parameter "session_replication_role"',
            # nothing of its own in the schema
            "CREATE TABLE x (id integer)": "42501 permission denied for schema public",
            "CREATE VIEW events_v AS SELECT 1": "42501 permission denied for schema public",
            # the migrations' bookkeeping
            "UPDATE alembic_version SET version_num = '0001'": "42501 permission denied for table alembic_version",
            "DELETE FROM checkpoints": "42501 permission denied for table checkpoints",
            "UPDATE key_checks SET check_value = ''": "42501 permission denied for table key_checks",
        }
        outcomes = {statement: _refusal(conn, statement) for statement in refused}
        assert outcomes == refused

        # What the service needs stays possible (rolled back here): the
        # projection is written in place, and protected by the card MAC and
        # `pinlife check` instead of by privileges.
        allowed = [
            "UPDATE pin_states SET consecutive_failures = 0",
            "INSERT INTO events (position, stream_id, stream_kind, version, event_id, event_type, schema_version, "
            "occurred_at, channel, terminal_id, request_id, payload, prev_hash, hash) VALUES (999, 'c', 'card', 1, "
            "'e', 'CardEnrolled', 1, now(), 'x', 't', 'r', '{}', '', '')",
            "UPDATE log_head SET position = position WHERE id = 1",
            "DELETE FROM requests WHERE created_at < now() - interval '1 day'",
            "SELECT version_num FROM alembic_version",
        ]
        assert {s: _refusal(conn, s) for s in allowed} == dict.fromkeys(allowed)
        # and the triggers are untouched
        enabled = conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal ORDER BY 1"
        ).fetchall()
        assert enabled == sorted((t, "O") for t in TRIGGERS)


def _reset(client: Client, card: str, pin_type: int, new_pin: str, documents=(MY_NUMBER_CARD,)):
    request = cpb.ResetPinRequest(
        request_id=str(uuid.uuid4()),
        card_id=card,
        pin_type=pin_type,
        new_pin=new_pin,
        applicant=pb.APPLICANT_HOLDER,
        documents=list(documents),
    )
    return client.counter.ResetPin(request, timeout=10, metadata=client.metadata)


@pytest.mark.postgres
@pytest.mark.slow
def test_the_server_runs_every_kind_of_command_as_the_restricted_role(restricted, tmp_path):
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    # A Tuesday at 10:00 in Tokyo: the ward office is open.
    env = {"PINLIFE_CLOCK": "start:2026-12-01T10:00:00+09:00"}
    server = ProcessServer(restricted.url, key_file, tmp_path / "server.log", env)
    reader = Client(server.target, "clinic-reader-01")
    naka = Client(server.target, "naka-counter-01", office=NAKA)
    tsurumi = Client(server.target, "tsurumi-counter-01", office=TSURUMI)
    store = None
    try:
        enroll = cpb.EnrollCardRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-R1",
            ward="naka",
            pins=[cpb.InitialPin(pin_type=USER, pin="4821"), cpb.InitialPin(pin_type=SIGN, pin="KX73PQ")],
        )
        naka.counter.EnrollCard(enroll, timeout=10, metadata=naka.metadata)
        assert reader.verify("card-R1", USER, "4821").check.result == pb.CHECK_RESULT_OK
        rid = str(uuid.uuid4())
        wrong = reader.verify("card-R1", USER, "0000", request_id=rid).check
        assert (wrong.result, wrong.remaining_tries) == (pb.CHECK_RESULT_WRONG_PIN, 2)
        replay = reader.verify("card-R1", USER, "0000", request_id=rid)  # the request log
        assert replay.replayed and replay.check == wrong
        for _ in range(2):
            last = reader.verify("card-R1", USER, "0000").check
        assert (last.result, last.locked_now) == (pb.CHECK_RESULT_LOCKED, True)
        status = reader.status("card-R1", USER).pins[0]
        assert status.status == pb.PIN_STATUS_LOCKED

        # a counter that does not serve the ward: refused, on the terminal's stream
        with pytest.raises(grpc.RpcError) as err:
            _reset(tsurumi, "card-R1", USER, "1357")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # the holder's ward office resets the PIN (a new verifier, the lock cleared)
        assert _reset(naka, "card-R1", USER, "1357").pin.status == pb.PIN_STATUS_ACTIVE
        assert reader.verify("card-R1", USER, "1357").check.result == pb.CHECK_RESULT_OK
        changed = reader.change("card-R1", SIGN, "KX73PQ", "ZZ9900")
        assert changed.changed and changed.check.result == pb.CHECK_RESULT_OK
        assert reader.verify("card-R1", SIGN, "ZZ9900").check.result == pb.CHECK_RESULT_OK

        # `pinlife check` reads as the same role: every chain intact, the projection a fold of the log
        store = EventStore(restricted.url)
        assert store.integrity.first_broken_link(INTEGRITY) is None
        assert store.cards.projection() == store.cards.rebuild()
        types = [e.event_type for e in store.log.stream("card-R1")]
        assert types[:2] == ["CardEnrolled", "PinVerified"] and "PinReset" in types and "PinChanged" in types
    finally:
        if store is not None:
            store.close()
        for c in (reader, naka, tsurumi):
            c.close()
        server.close()
    log = (tmp_path / "server.log").read_text()
    assert "InsufficientPrivilege" not in log and "permission denied" not in log


def test_rows_the_restricted_role_may_insert_are_findings_not_crashes(restricted, keys):
    """The service's own role may INSERT into the log and into checkpoints:
    what it inserts by hand (a row no reader can read, a forged checkpoint)
    is named by the check and never stops signing nor reaches an auditor."""
    owner = EventStore(restricted.owner_url)
    try:
        run_ok(ThreadRunner(owner, keys, system_clock), enroll("card-R1"), verify("card-R1", DOMAIN_USER, CORRECT[DOMAIN_USER]))
        checkpoints.sign_checkpoint(owner, keys, system_clock())
    finally:
        owner.close()
    with _connect(restricted.url) as conn:  # as the service's role, by hand
        conn.execute(
            "INSERT INTO events (position, stream_id, stream_kind, version, event_id, event_type, schema_version, occurred_at,"
            " pin_type, channel, terminal_id, request_id, payload, prev_hash, hash)"
            " VALUES (3, 'card-R1', 'card', 3, 'forged-1', 'NoSuchEvent', 1, now(), NULL, 'x', 'x', 'x', '\"text\"', %s, %s)",
            ("0" * 64, "1" * 64),
        )
        conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, frontier, note, mac, created_at)"
            " VALUES (3, %s, '{}', 'forged', 'k:00', now())",
            ("ab" * 32,),
        )
    store = EventStore(restricted.url)
    try:
        report = check_store(store, keys)
        assert not report.intact
        assert report.first_unreadable["position"] == 3 and report.checkpoint_problem["tree_size"] == 3
        assert checkpoints.latest_authentic(store, keys).tree_size == 2  # the forged row is not what auditors get
    finally:
        store.close()
