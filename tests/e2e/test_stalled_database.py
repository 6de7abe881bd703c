"""A hung database path: the connection to PostgreSQL stalls (a proxy that
stops forwarding without closing anything, as a stopped database server or
a black-holing network does while the kernel still acknowledges). Calls
fail UNAVAILABLE within the group-commit writer's batch deadline
(service/app/writer.py: BATCH_DEADLINE, 2 s) instead of hanging until their
own deadlines, health turns NOT_SERVING, and when the path resumes the
service serves again by itself. A retry of a call that failed UNAVAILABLE
(outcome unknown) with the same request id is applied exactly once.

The servers here have a batch deadline of 0.5 s and look at their store's
health every 0.1 s (the defaults: 2 s and 1 s), so that the test does not
wait on them. The bound asserted is generous (5 s for the 0.5 s deadline on
a busy test machine, as for the default): it is fail-fast behaviour, not a
performance figure."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from pinlife.app.writer import BATCH_DEADLINE
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer, free_port

USER = pb.PIN_TYPE_USER_CERTIFICATE
# s: the calls' gRPC deadline, generous over BATCH_DEADLINE (2 s): a call that waited it out ends DEADLINE_EXCEEDED
FAIL_FAST = 5.0
assert BATCH_DEADLINE < FAIL_FAST
DEADLINE, HEALTH_EVERY = 0.5, 0.1  # s: the servers' batch deadline and health interval here


class PausableProxy:
    """A loopback TCP proxy that can pause: while paused it accepts and reads
    as before (the kernel keeps acknowledging) but forwards nothing, in
    either direction, and opens no upstream connection; nothing is closed.
    On resume what it held goes on."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host, self.target_port = host, target_port
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, self.port), backlog=64)
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        with self._lock:
            socks, self._socks = self._socks + [self._listener], []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.append(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()
        if self._closed:
            return
        try:
            upstream = socket.create_connection((self.host, self.target_port))
        except OSError:
            client.close()
            return
        self._track(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()  # paused: hold what was read, forward nothing
                if self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _code(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_stalled_database_fails_calls_fast_reports_not_serving_and_recovers(databases, keys, writer):
    url = databases.create("postgres")
    u = make_url(url)
    proxy = PausableProxy(u.port or 5432)
    via_proxy = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    server = ThreadedServer(via_proxy, keys, writer=writer, batch_deadline=DEADLINE, health_interval=HEALTH_EVERY)
    client = Client(server.target)
    try:
        client.enroll("card-stall", {USER: "4821"})
        assert client.verify("card-stall", USER, "4821").check.result == pb.CHECK_RESULT_OK

        proxy.pause()
        # Calls in flight together (one batch, or a batch and the ones queued
        # behind it), then the next ones and a status read.
        rids = [str(uuid.uuid4()) for _ in range(4)]

        def verify(rid: str | None = None):
            return _code(lambda: client.verify("card-stall", USER, "4821", request_id=rid, timeout=FAIL_FAST))

        with ThreadPoolExecutor(len(rids)) as pool:
            in_flight = list(pool.map(verify, rids))
        later = [verify() for _ in range(2)]
        status = _code(lambda: client.status("card-stall", timeout=FAIL_FAST))
        assert [*in_flight, *later, status] == [grpc.StatusCode.UNAVAILABLE] * 7  # fast: before each call's deadline
        assert _wait_for(lambda: not client.serving(), 5), "health still SERVING with the store stalled"

        proxy.resume()
        assert _wait_for(client.serving, 10), "health did not turn SERVING once the store answered again"
        # The calls that failed UNAVAILABLE had an unknown outcome: retried
        # with the same request id, each is in the log exactly once.
        for rid in rids:
            assert client.verify("card-stall", USER, "4821", request_id=rid).check.result == pb.CHECK_RESULT_OK
        assert client.status("card-stall").card_id == "card-stall"
        per_request: dict[str, int] = {}
        for e in server.store.log.stream("card-stall"):
            per_request[e.request_id] = per_request.get(e.request_id, 0) + 1
        assert all(per_request[rid] == 1 for rid in rids)
    finally:
        proxy.resume()
        client.close()
        server.close()
        proxy.close()


def test_a_writer_stalled_on_its_database_alone_turns_health_not_serving(databases, keys):
    """SQLite, whose write lock another process holds: reads (the health
    ping among them) still work, but the writer is stalled past its
    deadline; health follows the writer (PinLife.can_write), and recovers
    with it."""
    url = databases.create("sqlite")
    server = ThreadedServer(url, keys, batch_deadline=DEADLINE, health_interval=HEALTH_EVERY)
    client = Client(server.target)
    other = create_engine(url, connect_args={"isolation_level": None})
    try:
        client.enroll("card-lock", {USER: "4821"})
        with other.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, as another writer holds it
            try:
                assert _code(lambda: client.verify("card-lock", USER, "4821", timeout=FAIL_FAST)) == grpc.StatusCode.UNAVAILABLE
                assert _wait_for(lambda: not client.serving(), 5), "health still SERVING with the writer stalled"
            finally:
                conn.exec_driver_sql("ROLLBACK")
        assert _wait_for(client.serving, 10)
        assert client.verify("card-lock", USER, "4821").check.result == pb.CHECK_RESULT_OK
    finally:
        other.dispose()
        client.close()
        server.close()
