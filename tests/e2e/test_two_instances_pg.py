"""Two server processes on one PostgreSQL: concurrent wrong attempts at one
card never exceed the limit, a retried request id appends nothing, whichever
instance the retry reaches, and one proxy inquiry or one store reservation
is used once however many completions race for it.

The module's tests share the two servers and their store (each test its own
cards and terminals; what they check of the whole log holds for any log):
two processes take seconds to start."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from pinlife.store.event_store import EventStore
from pinlife.v1 import common_pb2 as pb
from tests.conftest import make_key_file
from tests.e2e.harness import Client, ProcessServer
from tests.keys import INTEGRITY
from tests.store.helpers import occurrences

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USER = pb.PIN_TYPE_USER_CERTIFICATE


@pytest.fixture(scope="module")
def two_instances(module_databases, tmp_path_factory):
    url = module_databases.create("postgres")
    tmp_path = tmp_path_factory.mktemp("two-instances")
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    # The service clock starts on a Tuesday at 10:00 in Tokyo: the kiosks are open.
    env = {"PINLIFE_CLOCK": "start:2026-12-01T10:00:00+09:00"}
    servers = [ProcessServer(url, key_file, tmp_path / f"server-{i}.log", env) for i in range(2)]
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
    types = Counter(e.event_type for e in store.log.stream("card-race"))
    assert {t: n for t, n in types.items() if t != "LockedPinAttempted"} == {
        "CardEnrolled": 1,
        "PinVerificationFailed": 3,
        "PinLocked": 1,
    }
    assert 1 <= types["LockedPinAttempted"] <= 2  # once per terminal and window, the rest counted (repeats.py)
    assert occurrences(store, "card-race", "LockedPinAttempted") == attempts - 3
    positions = [e.position for e in store.log.all_events()]
    assert positions == list(range(1, len(positions) + 1))
    assert store.cards.projection() == store.cards.rebuild()
    assert store.integrity.first_broken_link(INTEGRITY) is None
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
    types = [e.event_type for e in store.log.stream("card-retry")]
    assert types == ["CardEnrolled", "PinVerificationFailed"]
    a.close()
    b.close()


def _race(clients, call, n: int = 16) -> Counter:
    with ThreadPoolExecutor(len(clients)) as pool:
        return Counter(pool.map(lambda i: call(clients[i % len(clients)]), range(n)))


def test_one_inquiry_completed_from_two_instances_at_once_resets_once(two_instances):
    from pinlife.v1 import counter_service_pb2 as cpb

    servers, store = two_instances
    clients = [Client(s.target, terminal=f"counter-{i}") for i, s in enumerate(servers) for _ in range(4)]
    clients[0].enroll("card-proxy-race", {USER: "4821"})
    card = pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)
    inquiry = clients[0].counter.RequestProxyReset(
        cpb.RequestProxyResetRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-proxy-race",
            pin_type=USER,
            documents=[card, pb.Document(type=pb.DOCUMENT_TYPE_OTHER_ID)],
        ),
        timeout=10,
        metadata=clients[0].metadata,
    )
    second_visit = [card] + [
        pb.Document(type=t)
        for t in (pb.DOCUMENT_TYPE_INQUIRY_FORM, pb.DOCUMENT_TYPE_POWER_OF_ATTORNEY, pb.DOCUMENT_TYPE_PUBLIC_PHOTO_ID)
    ]

    def complete(c):
        req = cpb.CompleteProxyResetRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-proxy-race",
            pin_type=USER,
            inquiry_id=inquiry.inquiry_id,
            code=inquiry.code,
            new_pin="2468",
            documents=second_visit,
        )
        return c.counter.CompleteProxyReset(req, timeout=20, metadata=c.metadata).result

    results = _race(clients, complete)
    assert results == {cpb.PROXY_RESET_RESULT_COMPLETED: 1, cpb.PROXY_RESET_RESULT_NO_OPEN_INQUIRY: 15}
    assert [e.event_type for e in store.log.stream("card-proxy-race")].count("PinReset") == 1
    assert store.cards.rebuild() == store.cards.projection() and store.integrity.first_broken_link(INTEGRITY) is None
    for c in clients:
        c.close()


def test_one_reservation_completed_at_two_kiosks_at_once_resets_once(two_instances):
    import grpc

    from pinlife.v1 import pin_service_pb2 as ppb
    from pinlife.v1 import store_service_pb2 as spb

    servers, store = two_instances
    clients = [Client(s.target, terminal=f"kiosk-{i}") for i, s in enumerate(servers) for _ in range(4)]
    clients[0].enroll("card-kiosk-race", {USER: "4821", pb.PIN_TYPE_SIGNATURE: "ABC123"})
    reserved = clients[0].pins.ReserveStoreReset(
        ppb.ReserveStoreResetRequest(
            request_id=str(uuid.uuid4()), card_id="card-kiosk-race", pin_type=pb.PIN_TYPE_SIGNATURE, proving_pin="4821"
        ),
        timeout=10,
        metadata=clients[0].metadata,
    )
    assert reserved.reserved

    def kiosk(c):
        req = spb.StoreResetPinRequest(
            request_id=str(uuid.uuid4()),
            card_id="card-kiosk-race",
            pin_type=pb.PIN_TYPE_SIGNATURE,
            proving_pin="4821",
            new_pin="NEW123",
        )
        try:
            return "reset" if c.store.ResetPin(req, timeout=20, metadata=c.metadata).reset else "not reset"
        except grpc.RpcError as err:
            return err.code().name

    assert _race(clients, kiosk) == {"reset": 1, "FAILED_PRECONDITION": 15}
    assert [e.event_type for e in store.log.stream("card-kiosk-race")].count("PinReset") == 1
    assert store.cards.rebuild() == store.cards.projection()
    for c in clients:
        c.close()
