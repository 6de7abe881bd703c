"""Two server processes on one PostgreSQL: concurrent wrong attempts at one
card never exceed the limit, and a retried request id appends nothing,
whichever instance the retry reaches."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from pinlife.v1 import common_pb2 as pb
from service.store.event_store import EventStore
from tests.conftest import make_key_file
from tests.e2e.harness import Client, ProcessServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USER = pb.PIN_TYPE_USER_CERTIFICATE


@pytest.fixture
def two_instances(databases, tmp_path):
    url = databases.create("postgres")
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    servers = [ProcessServer(url, key_file, tmp_path / f"server-{i}.log") for i in range(2)]
    store = EventStore(url)
    yield servers, store
    store.close()
    for s in servers:
        s.close()


def test_concurrent_wrong_attempts_on_two_instances_give_exactly_one_lock(two_instances):
    servers, store = two_instances
    clients = [Client(s.target, terminal=f"reader-{i}") for i, s in enumerate(servers) for _ in range(4)]
    clients[0].enroll("card-race", {USER: "4821", pb.PIN_TYPE_SIGNATURE: "ABC123"})
    attempts = 64

    def attempt(i: int):
        return clients[i % len(clients)].verify("card-race", USER, "0000").check

    with ThreadPoolExecutor(16) as pool:
        checks = list(pool.map(attempt, range(attempts)))

    results = Counter(pb.CheckResult.Name(c.result) for c in checks)
    assert results == {"CHECK_RESULT_WRONG_PIN": 2, "CHECK_RESULT_LOCKED": attempts - 2}
    assert sum(c.locked_now for c in checks) == 1
    types = Counter(e.event_type for e in store.stream("card-race"))
    assert types == {"CardEnrolled": 1, "PinVerificationFailed": 3, "PinLocked": 1, "LockedPinAttempted": attempts - 3}
    positions = [e.position for e in store.all_events()]
    assert positions == list(range(1, len(positions) + 1))
    assert store.projection() == store.rebuild()
    assert store.first_broken_link() is None
    for c in clients:
        c.close()


def test_a_retry_reaching_the_other_instance_appends_nothing(two_instances):
    servers, store = two_instances
    a, b = Client(servers[0].target, "reader-x"), Client(servers[1].target, "reader-x")
    a.enroll("card-retry", {USER: "4821"})
    rid = str(uuid.uuid4())

    def send(client):
        return client.verify("card-retry", USER, "0000", request_id=rid)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, [a, b] * 4))
    assert len({a.check.SerializeToString() for a in answers}) == 1
    assert sum(not ans.replayed for ans in answers) == 1
    types = [e.event_type for e in store.stream("card-retry")]
    assert types == ["CardEnrolled", "PinVerificationFailed"]
    a.close()
    b.close()
