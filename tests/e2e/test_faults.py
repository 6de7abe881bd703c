"""Durability and faults: kill -9 under load, the database going away and
coming back, and client deadlines shorter than the work."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from pinlife.keys.ring import KeyRing
from pinlife.store.event_store import EventStore
from pinlife.store.tables import requests
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from tests.conftest import make_key_file
from tests.e2e.harness import Client, ProcessServer, TcpProxy, ThreadedServer
from tests.keys import INTEGRITY

USER = pb.PIN_TYPE_USER_CERTIFICATE
CARDS = [f"card-k{i:03d}" for i in range(40)]


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_answer(db_url, tmp_path):
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    # Its own process group: the kill takes the server and its writer process
    # at once, as a crash of the service would (a writer left behind would
    # still commit its batch while the store is checked below).
    server = ProcessServer(db_url, key_file, tmp_path / "before.log", new_session=True)
    setup = Client(server.target, "loader")
    for card in CARDS:
        setup.enroll(card, {USER: "4821"})
    setup.close()

    acknowledged: dict[str, tuple[str, str, pb.PinCheck]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        # Each worker is its own reader with its own five cards: failures on
        # a few cards stay below the terminal throttle.
        client = Client(server.target, f"reader-{worker}")
        n = 0
        while not stop.is_set():
            card = CARDS[worker * 5 + n % 5]
            pin = "4821" if n % 3 else "0000"
            rid = f"w{worker}-{n}-{uuid.uuid4().hex[:8]}"
            n += 1
            try:
                resp = client.verify(card, USER, pin, request_id=rid, timeout=5)
            except grpc.RpcError:
                continue  # not acknowledged: may or may not have been applied
            with lock:
                acknowledged[rid] = (f"reader-{worker}", card, resp.check)
        client.close()

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20  # a busy machine (parallel tests) gets going more slowly
    while len(acknowledged) <= 60 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(server.proc.pid, signal.SIGKILL)  # no graceful stop, no flush, in either process
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    server.log.close()
    assert len(acknowledged) > 50, "the load did not get going"

    store = EventStore(db_url)
    try:
        with store.reader.connect() as conn:
            stored = {r.request_id: r.card_id for r in conn.execute(select(requests.c.request_id, requests.c.card_id))}
        missing = [rid for rid in acknowledged if rid not in stored]
        assert missing == []
        events = list(store.log.all_events())
        assert [e.position for e in events] == list(range(1, len(events) + 1))
        by_request: dict[str, list] = {}
        for e in events:
            by_request.setdefault(e.request_id, []).append(e)
        for rid, (_, card, check) in acknowledged.items():
            evs = by_request[rid]
            assert {e.stream_id for e in evs} == {card}
            # One command's events, once: consecutive versions of one stream.
            assert [e.version for e in evs] == list(range(evs[0].version, evs[0].version + len(evs)))
            expected = {
                pb.CHECK_RESULT_OK: ["PinVerified"],
                pb.CHECK_RESULT_WRONG_PIN: ["PinVerificationFailed"],
            }.get(check.result)
            if expected:
                assert [e.event_type for e in evs] == expected
        assert store.cards.projection() == store.cards.rebuild()
        assert store.integrity.first_broken_link(INTEGRITY) is None
    finally:
        store.close()

    # After restart, a retry of an acknowledged request gets the same answer
    # (the restarted server here in this process: the store is what matters).
    again = ThreadedServer(db_url, KeyRing.load(key_file))
    rid, (terminal, card, check) = next(iter(acknowledged.items()))
    client = Client(again.target, terminal)
    try:
        resp = client.verify(card, USER, "4821", request_id=rid)
        assert resp.replayed and resp.check == check
    finally:
        client.close()
        again.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_database_outage_fails_fast_reports_not_serving_and_recovers(databases, tmp_path):
    url = databases.create("postgres")
    u = make_url(url)
    proxy = TcpProxy(u.port or 5432)
    via_proxy = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    server = ProcessServer(via_proxy, key_file, tmp_path / "server.log")
    client = Client(server.target)
    try:
        client.enroll("card-out", {USER: "4821"})
        assert client.verify("card-out", USER, "4821").check.result == pb.CHECK_RESULT_OK

        proxy.cut()
        with pytest.raises(grpc.RpcError) as err:
            # Fails fast: a server that waited out the call's deadline would end it DEADLINE_EXCEEDED.
            client.verify("card-out", USER, "4821", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as err:
            client.status("card-out")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        pin_message = err.value.details()
        audit_calls = {
            "GetCardHistory": lambda: client.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-out"), timeout=30),
            "QueryEvents": lambda: client.audit.QueryEvents(apb.QueryEventsRequest(), timeout=30),
            "VerifyIntegrity": lambda: list(client.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(), timeout=30)),
        }
        for name, call in audit_calls.items():  # every service tells a client the same, never the driver's text
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (name, err.value.details())
            assert err.value.details() == pin_message, name
            assert str(proxy.port) not in err.value.details() and "sqlalche" not in err.value.details(), name
        deadline = time.monotonic() + 10
        while client.serving() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.serving()

        proxy.restore()
        deadline = time.monotonic() + 20
        while not client.serving() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.serving()
        assert client.verify("card-out", USER, "4821").check.result == pb.CHECK_RESULT_OK
    finally:
        client.close()
        server.close()
        proxy.close()


def _read_only(url: str, on: bool) -> None:
    """Make the database refuse every write (PostgreSQL's
    default_transaction_read_only, as a standby or a full disk's emergency
    setting would), and end its sessions so that new ones take the setting."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET default_transaction_read_only = off")  # this session may still write
            name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}')
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
    finally:
        engine.dispose()


def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_health_follows_the_write_path_when_the_database_refuses_writes(databases, tmp_path):
    """Issue 24.5: reachable but refusing writes (read-only), the server
    reports NOT_SERVING once its batches fail and a write probe fails too,
    and SERVING again by itself on the first write that commits."""
    url = databases.create("postgres")
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    server = ProcessServer(url, key_file, tmp_path / "server.log")
    client = Client(server.target)
    try:
        client.enroll("card-ro", {USER: "4821"})
        _read_only(url, True)
        codes = []
        for _ in range(5):  # the first may meet a connection the database ended: UNAVAILABLE
            with pytest.raises(grpc.RpcError) as err:
                client.verify("card-ro", USER, "4821", timeout=30)
            codes.append(err.value.code())
        assert grpc.StatusCode.INTERNAL in codes, codes  # a write refused: nothing applied
        assert _until(lambda: not client.serving(), 10), "health stayed SERVING while every write failed"
        assert client.status("card-ro").card_status == pb.CARD_STATUS_ACTIVE  # reads still answer

        _read_only(url, False)
        assert _until(client.serving, 20), "health did not come back once writes commit"
        assert client.verify("card-ro", USER, "4821").check.result == pb.CHECK_RESULT_OK
    finally:
        client.close()
        server.close()
        _read_only(url, False)
    events = [
        json.loads(line).get("event") for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")
    ]
    assert {"writes_failing", "writes_fail", "writes_commit_again"} <= set(events)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _writer_pid(server: ProcessServer) -> int:
    """The server's writer process: its one child (runtime/child.py starts no
    resource tracker beside it, as multiprocessing would)."""
    (child,) = _children(server.proc.pid)
    with open(f"/proc/{child}/cmdline", "rb") as f:
        assert b"runtime.child import _enter" in f.read()
    return child


@pytest.mark.slow
def test_a_dead_writer_process_stops_the_server_for_its_supervisor_and_a_fresh_one_serves(db_url, tmp_path):
    """Crash-only: kill -9 of the writer process; the server turns
    NOT_SERVING, exits with status 1, and a restarted server serves with
    nothing acknowledged lost."""
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    server = ProcessServer(db_url, key_file, tmp_path / "first.log")
    client = Client(server.target)
    try:
        client.enroll("card-w", {USER: "4821"})
        assert client.verify("card-w", USER, "0000").check.remaining_tries == 2  # acknowledged
        os.kill(_writer_pid(server), signal.SIGKILL)
        assert server.proc.wait(20) == 1
    finally:
        client.close()
        server.close()
    log = (tmp_path / "first.log").read_text()
    assert "writer_process_died" in log and "stopping_after_writer_death" in log
    # The fresh server, as its supervisor would start it (here in this process: the store is what matters).
    again = ThreadedServer(db_url, KeyRing.load(key_file))
    client = Client(again.target)
    try:
        assert client.verify("card-w", USER, "4821").check.result == pb.CHECK_RESULT_OK
    finally:
        client.close()
        again.close()
    store = EventStore(db_url)
    try:
        assert [e.event_type for e in store.log.stream("card-w")] == ["CardEnrolled", "PinVerificationFailed", "PinVerified"]
    finally:
        store.close()


class SlowClock:
    """A clock that makes the next write transaction slower than a client
    deadline (it is read at the start of each transaction, in the writer)."""

    def __init__(self):
        self.delay = 0.0

    def __call__(self) -> datetime:
        if threading.current_thread().name.startswith("pinlife-writer"):
            delay, self.delay = self.delay, 0.0
            time.sleep(delay)
        return datetime.now(UTC)


def test_deadline_shorter_than_the_work_then_retry_gets_the_committed_answer(db_url, keys):
    clock = SlowClock()
    server = ThreadedServer(db_url, keys, clock=clock)
    client = Client(server.target)
    try:
        client.enroll("card-dl", {USER: "4821"})
        clock.delay = 0.6
        rid = str(uuid.uuid4())
        with pytest.raises(grpc.RpcError) as err:
            client.verify("card-dl", USER, "0000", request_id=rid, timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 10  # the write was not cancelled with the caller: it commits
        while len(server.store.log.stream("card-dl")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        retry = client.verify("card-dl", USER, "0000", request_id=rid)
        assert retry.replayed
        assert (retry.check.result, retry.check.remaining_tries) == (pb.CHECK_RESULT_WRONG_PIN, 2)
        assert [e.event_type for e in server.store.log.stream("card-dl")] == ["CardEnrolled", "PinVerificationFailed"]
        assert client.serving()
    finally:
        client.close()
        server.close()
