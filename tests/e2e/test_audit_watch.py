"""WatchEvents over a real gRPC channel, on SQLite and PostgreSQL: the
stored events, then each one as it commits, in position order, none skipped
or repeated; a resume after the last position received; a watcher on one
PostgreSQL instance sees every commit of another (LISTEN pinlife_log); a
stopping server ends a watch UNAVAILABLE."""

from __future__ import annotations

import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer

USER = pb.PIN_TYPE_USER_CERTIFICATE
AUDITOR = "auditor-watch"
WAIT_S = 20  # a bound on a hung watch, not a measured duration


class Watch:
    """A WatchEvents stream consumed in a background thread."""

    def __init__(self, client: Client, after: int = 0):
        self.call = client.audit.WatchEvents(apb.WatchEventsRequest(after_position=after))
        self.events: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        try:
            for response in self.call:
                self.events.put(response.event)
        except grpc.RpcError as err:
            self.error = err
        self.events.put(None)

    def until(self, position: int) -> list:
        """Events received until one at `position` or later."""
        got = []
        while not got or got[-1].position < position:
            e = self.events.get(timeout=WAIT_S)
            assert e is not None, f"the watch ended: {self.error}"
            got.append(e)
        return got

    def cancel(self) -> None:
        self.call.cancel()
        self.thread.join(WAIT_S)


@pytest.fixture
def server(db_url, keys):
    srv = ThreadedServer(db_url, keys)
    yield srv
    srv.close()


def test_a_watch_gives_the_stored_events_then_each_commit_in_order(server):
    reader, auditor = Client(server.target, "reader-w1"), Client(server.target, AUDITOR)
    reader.enroll("card-W1", {USER: "4821"})
    for _ in range(3):
        reader.verify("card-W1", USER, "0000")
    stored_head = server.store.log.head_position()

    watch = Watch(auditor)
    seen = watch.until(stored_head)
    reader.verify("card-W1", USER, "4821")  # locked: recorded
    reader.enroll("card-W2", {USER: "1111"})
    head = server.store.log.head_position()
    seen += watch.until(head)
    watch.cancel()  # (recorded again as it ends: an event past `head`)

    assert [e.position for e in seen] == list(range(1, head + 1))
    stored = server.store.log.read_all(0, head)
    assert [(e.event_type, e.hash) for e in seen] == [(e.event_type, e.hash) for e in stored]
    types = [e.event_type for e in seen]
    assert types[:5] == ["CardEnrolled", "PinVerificationFailed", "PinVerificationFailed", "PinVerificationFailed", "PinLocked"]
    assert "AuditRead" in types  # the watch itself is recorded on the auditor's stream
    assert types[-2:] == ["LockedPinAttempted", "CardEnrolled"]
    assert seen[-1].stream_id == "card-W2"
    reader.close()
    auditor.close()


def test_a_watch_resumes_after_the_last_position_received(server):
    reader, auditor = Client(server.target, "reader-w2"), Client(server.target, AUDITOR)
    for i in range(4):
        reader.enroll(f"card-R{i}", {USER: "4821"})
    watch = Watch(auditor, after=2)
    first = watch.until(3)
    watch.cancel()
    assert [e.position for e in first] == [3]
    assert first[0].stream_id == "card-R2"
    reader.close()
    auditor.close()


def test_a_stopping_server_ends_the_watch_unavailable(db_url, keys):
    srv = ThreadedServer(db_url, keys)
    auditor = Client(srv.target, AUDITOR)
    watch = Watch(auditor)
    watch.until(1)  # its own AuditRead
    srv.close()
    watch.thread.join(WAIT_S)
    assert watch.error is not None and watch.error.code() == grpc.StatusCode.UNAVAILABLE
    auditor.close()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_a_watcher_on_one_instance_sees_every_commit_of_both_exactly_once(db_url, keys):
    a, b = ThreadedServer(db_url, keys), ThreadedServer(db_url, keys)
    auditor = Client(a.target, AUDITOR)
    writers = [Client(s.target, f"reader-{i}") for i, s in enumerate((a, b, b, b))]
    try:
        watch = Watch(auditor)
        watch.until(1)

        def enroll(i: int) -> None:
            writers[i % len(writers)].enroll(f"card-P{i}", {USER: "4821"}, request_id=str(uuid.uuid4()))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(enroll, range(60)))
        head = a.store.log.head_position()
        seen = watch.until(head)
        watch.cancel()
        positions = [1] + [e.position for e in seen]
        assert positions == list(range(1, head + 1))
        assert sorted(e.stream_id for e in seen if e.event_type == "CardEnrolled") == sorted(f"card-P{i}" for i in range(60))
    finally:
        for c in (auditor, *writers):
            c.close()
        a.close()
        b.close()
