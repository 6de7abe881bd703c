"""A request id's answer is replayed only within the replay window
(Policy.replay_window, 24 h; service/app/handlers.py replay): a retry within
it gets the kept answer and appends nothing; after it the id is refused
INVALID_ARGUMENT on request_id, and still nothing is appended. Kept answers
past the window are pruned (EventStore.prune_answers). Over the real gRPC
API on SQLite and PostgreSQL, with the server's clock moved by the test."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone, UTC

import grpc
import pytest
from sqlalchemy import select

from pinlife.v1 import common_pb2 as pb
from service.domain.policy import Policy
from service.store.event_store import EventStore
from service.store.tables import requests
from tests.e2e.harness import Client, ThreadedServer
from tests.rpc import field_violations
from tests.keys import INTEGRITY

USER = pb.PIN_TYPE_USER_CERTIFICATE
WINDOW = Policy().replay_window
# A Tuesday, 10:00 in Tokyo.
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
TOKYO = timezone(timedelta(hours=9))


class MovableClock:
    """The server's clock, moved by the test (the thread writer takes any
    callable returning an aware datetime)."""

    def __init__(self, at: datetime):
        self.now = at

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
def moved(db_url, keys):
    clock = MovableClock(START)
    server = ThreadedServer(db_url, keys, clock=clock)
    client = Client(server.target, terminal="reader-07")
    yield server, client, clock
    client.close()
    server.close()


def log_length(store) -> int:
    return sum(1 for _ in store.all_events())


def test_window_is_24_hours():
    assert WINDOW == timedelta(hours=24)


def test_an_answer_is_replayed_within_the_window_and_refused_after_it(moved):
    server, client, clock = moved
    store = server.store
    client.enroll("card-R1", {USER: "4821"})
    ok_id, wrong_id = str(uuid.uuid4()), str(uuid.uuid4())
    first = client.verify("card-R1", USER, "4821", request_id=ok_id)
    assert first.check.result == pb.CHECK_RESULT_OK and not first.replayed
    wrong = client.verify("card-R1", USER, "0000", request_id=wrong_id)
    assert wrong.check.result == pb.CHECK_RESULT_WRONG_PIN and wrong.check.remaining_tries == 2
    stream = [e.event_type for e in store.stream("card-R1")]
    length = log_length(store)

    # Within the window, up to its very end: the kept answer, nothing appended.
    for by in (timedelta(0), timedelta(hours=1), WINDOW - timedelta(seconds=1)):
        clock.now = START + by
        again = client.verify("card-R1", USER, "4821", request_id=ok_id)
        assert again.replayed and again.check == first.check
        again_wrong = client.verify("card-R1", USER, "0000", request_id=wrong_id)
        assert again_wrong.replayed and again_wrong.check == wrong.check
    clock.now = START + WINDOW  # exactly the window: still replayed
    assert client.verify("card-R1", USER, "4821", request_id=ok_id).replayed
    assert [e.event_type for e in store.stream("card-R1")] == stream
    assert log_length(store) == length

    # After it: refused as reused, on request_id, and nothing appended.
    clock.now = START + WINDOW + timedelta(seconds=1)
    for rid, pin in ((ok_id, "4821"), (wrong_id, "0000")):
        with pytest.raises(grpc.RpcError) as err:
            client.verify("card-R1", USER, pin, request_id=rid)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = field_violations(err.value)
        assert set(violations) == {"request_id"}, violations
        assert "24 h" in violations["request_id"]
    clock.advance(timedelta(days=3))
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-R1", USER, "0000", request_id=wrong_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in field_violations(err.value)
    assert [e.event_type for e in store.stream("card-R1")] == stream
    assert log_length(store) == length
    # The refused retry of the wrong try cost the holder no try.
    (state,) = client.status("card-R1", USER).pins
    assert state.consecutive_failures == 1 and state.remaining_tries == 2

    # A new request id is decided as usual.
    fresh = client.verify("card-R1", USER, "4821")
    assert fresh.check.result == pb.CHECK_RESULT_OK and not fresh.replayed
    assert log_length(store) == length + 1
    assert store.first_broken_link(INTEGRITY) is None
    assert store.projection() == store.rebuild()


def test_the_window_runs_from_each_answer_not_from_the_terminal(moved):
    """Two ids answered a day apart: at the second's time + 1 h the first is
    refused, the second replayed."""
    server, client, clock = moved
    client.enroll("card-R2", {USER: "4821"})
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    client.verify("card-R2", USER, "4821", request_id=early)
    clock.advance(timedelta(hours=20))
    answer = client.verify("card-R2", USER, "4821", request_id=late)
    clock.advance(timedelta(hours=5))  # early: 25 h ago; late: 5 h ago
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-R2", USER, "4821", request_id=early)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in field_violations(err.value)
    again = client.verify("card-R2", USER, "4821", request_id=late)
    assert again.replayed and again.check == answer.check


def _kept(url: str) -> set[str]:
    store = EventStore(url)
    try:
        with store.reader.begin() as conn:
            return {r.request_id for r in conn.execute(select(requests.c.request_id))}
    finally:
        store.close()


def test_prune_answers_deletes_those_older_than_the_cutoff_and_keeps_the_rest(moved, db_url):
    server, client, clock = moved
    client.enroll("card-P1", {USER: "4821"}, request_id="enroll-P1")  # kept at START
    old = str(uuid.uuid4())
    client.verify("card-P1", USER, "4821", request_id=old)  # kept at START
    clock.advance(timedelta(hours=2))
    new = str(uuid.uuid4())
    new_answer = client.verify("card-P1", USER, "0000", request_id=new)  # kept at START + 2 h
    assert _kept(db_url) == {"enroll-P1", old, new}
    length = log_length(server.store)

    pruner = EventStore(db_url)
    try:
        assert pruner.prune_answers(START) == 0  # strictly older than the cutoff
        assert _kept(db_url) == {"enroll-P1", old, new}
        assert pruner.prune_answers(START + timedelta(hours=1)) == 2
        assert _kept(db_url) == {new}
        assert pruner.prune_answers(START + timedelta(hours=1)) == 0
        assert _kept(db_url) == {new}
    finally:
        pruner.close()
    # The kept answer is still replayed; pruning appended nothing.
    again = client.verify("card-P1", USER, "0000", request_id=new)
    assert again.replayed and again.check == new_answer.check
    assert log_length(server.store) == length
    assert server.store.first_broken_link(INTEGRITY) is None


def test_prune_answers_takes_a_cutoff_in_any_time_zone(moved, db_url):
    """The cutoff is an instant: given in Tokyo time, it prunes exactly what
    the same instant in UTC prunes."""
    server, client, clock = moved
    client.enroll("card-P2", {USER: "4821"}, request_id="enroll-P2")  # kept at START (10:00 Tokyo)
    clock.advance(timedelta(hours=2))
    later = str(uuid.uuid4())
    client.verify("card-P2", USER, "4821", request_id=later)  # kept at START + 2 h (12:00 Tokyo)
    cutoff = (START + timedelta(hours=1)).astimezone(TOKYO)  # 11:00 Tokyo
    pruner = EventStore(db_url)
    try:
        assert pruner.prune_answers(cutoff) == 1
    finally:
        pruner.close()
    assert _kept(db_url) == {later}
