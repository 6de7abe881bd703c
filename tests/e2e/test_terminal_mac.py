"""A terminal's throttle state cannot be reset from the database (issue 22,
item 7). The service's own PostgreSQL role may UPDATE `terminals`; before
terminal rows had a MAC, anyone holding that credential could clear a
terminal's failure window and let one terminal fail on 1,500 cards in
seconds. Now the row's throttle state is MACed under the integrity key, so a
reset window refuses that terminal's calls (DATA_LOSS, nothing appended, an
integrity violation logged) and `pinlife check` / VerifyIntegrity name it.

Over a real gRPC channel: on SQLite and PostgreSQL with the window reset by
direct SQL, and on PostgreSQL as the restricted role itself against the
real server process."""

from __future__ import annotations

import json
import os
import uuid

import grpc
import pytest

from pinlife.keys.ring import KeyRing
from pinlife.store.check import check_store
from pinlife.store.event_store import EventStore
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from tests.conftest import make_key_file
from tests.e2e.harness import Client, ProcessServer
from tests.e2e.test_integrity_attacks import Service
from tests.e2e.test_restricted_role import _connect, restricted  # noqa: F401 - the fixture

USER = pb.PIN_TYPE_USER_CERTIFICATE
PIN, WRONG = "4821", "0000"
READER = "clinic-reader-07"
STREAM = f"terminal:{READER}"
RESET = "UPDATE terminals SET throttle_failures = NULL, throttled_until = NULL WHERE terminal_id = '" + READER + "'"


def _enroll(client: Client, card_id: str) -> None:
    req = cpb.EnrollCardRequest(
        request_id=str(uuid.uuid4()),
        card_id=card_id,
        ward="naka",
        pins=[cpb.InitialPin(pin_type=USER, pin=PIN), cpb.InitialPin(pin_type=pb.PIN_TYPE_SIGNATURE, pin="KX73PQ")],
    )
    client.counter.EnrollCard(req, timeout=10, metadata=client.metadata)


def _assert_terminal_refused(reader: Client, card_id: str) -> None:
    for call in (
        lambda: reader.verify(card_id, USER, PIN),
        lambda: reader.verify(card_id, USER, WRONG),
        lambda: reader.status(card_id),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.DATA_LOSS, err.value
        assert STREAM in err.value.details() and "integrity" in err.value.details()


def test_a_terminal_whose_failure_window_was_reset_by_sql_is_refused_and_named_by_verify_integrity(db_url, tmp_path):
    svc = Service(db_url, tmp_path)
    counter, reader, auditor = Client(svc.server.target, "counter-01"), Client(svc.server.target, READER), svc.client
    try:
        cards = [f"card-T{i}" for i in range(6)]
        for c in cards:
            _enroll(counter, c)
        for c in cards[:4]:
            assert reader.verify(c, USER, WRONG).check.result == pb.CHECK_RESULT_WRONG_PIN
        with svc.store.reader.connect() as conn:
            window = conn.exec_driver_sql(f"SELECT throttle_failures FROM terminals WHERE terminal_id = '{READER}'").scalar_one()
        assert len(json.loads(window)) == 4

        with svc.store.writer.begin() as conn:  # the attacker: a plain UPDATE, no key
            assert conn.exec_driver_sql(RESET).rowcount == 1

        before = svc.count()
        _assert_terminal_refused(reader, cards[4])
        assert svc.count() == before  # nothing appended, no try spent
        assert counter.verify(cards[5], USER, PIN).check.result == pb.CHECK_RESULT_OK  # other terminals are served

        report = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(), timeout=60))[-1].report
        assert not report.intact
        (problem,) = [p for p in report.problems if p.kind == apb.INTEGRITY_PROBLEM_KIND_TERMINAL_MAC]
        assert problem.stream_id == STREAM and "1 terminal(s) fail their MAC" in problem.reason
        assert [p.kind for p in report.problems] == [apb.INTEGRITY_PROBLEM_KIND_TERMINAL_MAC]  # nothing else is wrong

        counter.close()
        reader.close()
        svc.stop()
        rc, cli = svc.check()  # `pinlife check`
        assert rc == 1 and cli["terminals_failing_mac"] == [STREAM] and cli["terminals_failing_mac_count"] == 1
    finally:
        counter.close()
        reader.close()
        svc.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_as_the_restricted_role_a_window_reset_refuses_the_terminal_and_check_names_it(restricted, tmp_path):  # noqa: F811
    """The attack of the issue, as it was run: the service's own role resets a
    terminal's failure window with an UPDATE while the real server serves."""
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    env = {"PINLIFE_CLOCK": "start:2026-12-01T10:00:00+09:00"}  # a Tuesday: the ward office is open
    server = ProcessServer(restricted.url, key_file, tmp_path / "server.log", env)
    counter = Client(server.target, "naka-counter-01", office="naka-ward-office")
    reader = Client(server.target, READER)
    try:
        cards = [f"card-R{i}" for i in range(6)]
        for c in cards:
            _enroll(counter, c)
        for c in cards[:4]:
            assert reader.verify(c, USER, WRONG).check.result == pb.CHECK_RESULT_WRONG_PIN
        with _connect(restricted.url) as conn:  # as the service's role, by hand
            assert conn.execute(RESET).rowcount == 1
        _assert_terminal_refused(reader, cards[4])
        assert counter.verify(cards[5], USER, PIN).check.result == pb.CHECK_RESULT_OK
    finally:
        counter.close()
        reader.close()
        server.close()
    log = (tmp_path / "server.log").read_text()
    violations = [json.loads(line) for line in log.splitlines() if '"integrity_violation"' in line]
    assert violations and all(v.get("stream") == STREAM and v.get("what") == "terminal MAC" for v in violations)

    store = EventStore(restricted.url)  # `pinlife check` runs as the same role
    try:
        report = check_store(store, KeyRing.load(key_file))
    finally:
        store.close()
    assert not report.intact
    assert report.terminals_failing_mac == [STREAM] and report.terminals_failing_mac_count == 1
    assert report.first_broken_link is None and report.cards_failing_mac == []


def test_pinlife_migrate_seals_terminal_rows_only_in_the_run_that_adds_their_mac(databases, tmp_path):
    """`pinlife migrate` from revision 0008 seals the terminal rows it finds;
    a later run leaves a row whose MAC was cleared unsealed (refused, named
    by check) unless --seal-terminals is given."""
    from sqlalchemy import text

    from pinlife.domain.chain import GENESIS_HASH
    from pinlife.store.engine import make_engine
    from pinlife.store.migrate import upgrade
    from tests.e2e.harness import cli

    url = databases.create("sqlite", migrate=False)
    upgrade(url, "0008")
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO terminals (terminal_id, version, last_hash) VALUES (:t, 0, :g)"), {"t": READER, "g": GENESIS_HASH}
        )
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")},
        "PINLIFE_ENV": "test",
        "PINLIFE_DATABASE_URL": url,
        "PINLIFE_KEY_FILE": str(key_file),
    }
    done = cli("migrate", env=env)
    assert done.returncode == 0 and "sealed 1 terminal rows" in done.stdout, done
    store = EventStore(url)
    try:
        assert check_store(store, KeyRing.load(key_file)).intact
        with engine.begin() as conn:
            conn.execute(text("UPDATE terminals SET mac = NULL"))
        done = cli("migrate", env=env)
        assert done.returncode == 0 and "terminal" not in done.stdout, done
        assert check_store(store, KeyRing.load(key_file)).terminals_failing_mac == [STREAM]
        done = cli("migrate", "--seal-terminals", env=env)
        assert done.returncode == 0 and "sealed 1 terminal rows" in done.stdout, done
        assert check_store(store, KeyRing.load(key_file)).intact
    finally:
        store.close()
        engine.dispose()
