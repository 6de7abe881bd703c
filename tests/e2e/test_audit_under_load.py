"""The audit side under ordinary traffic, over real gRPC on SQLite and
PostgreSQL: a whole-store VerifyIntegrity answers intact while readers keep
verifying (the check judges one snapshot, in a process of its own); a watch
taking several events per message delivers every position once."""

from __future__ import annotations

import threading
import uuid

from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer

USER = pb.PIN_TYPE_USER_CERTIFICATE
CARDS = [f"card-l{i:03d}" for i in range(60)]


def test_a_whole_store_verify_is_intact_while_readers_keep_verifying(db_url, keys):
    server = ThreadedServer(db_url, keys)
    setup = Client(server.target, "counter-01")
    for card in CARDS:
        setup.enroll(card, {USER: "4821"})
    stop = threading.Event()
    errors: list[BaseException] = []

    def read(worker: int) -> None:
        client = Client(server.target, f"reader-{worker}")
        n = 0
        try:
            while not stop.is_set():
                card = CARDS[worker * 5 + n % 5]  # five cards each: wrong PINs on them stay under the throttle
                client.verify(card, USER, "4821" if n % 2 else "0000", request_id=str(uuid.uuid4()))
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            client.close()

    readers = [threading.Thread(target=read, args=(w,)) for w in range(4)]
    for t in readers:
        t.start()
    auditor = Client(server.target, "auditor-01")
    try:
        for _ in range(2):
            before = server.store.log.head_position()
            answers = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(), timeout=60))
            report = answers[-1].report
            assert report.intact, report
            assert report.cards_checked == len(CARDS)
            assert server.store.log.head_position() > before, "nothing was written while the store was checked"
    finally:
        stop.set()
        for t in readers:
            t.join()
        auditor.close()
        setup.close()
        server.close()
    assert errors == []


def test_a_watch_with_several_events_per_message_delivers_each_position_once(db_url, keys):
    server = ThreadedServer(db_url, keys)
    client = Client(server.target, "auditor-01")
    try:
        for card in CARDS[:30]:
            client.enroll(card, {USER: "4821"})
        head = server.store.log.head_position()
        call = client.audit.WatchEvents(apb.WatchEventsRequest(after_position=0, max_events_per_message=8), timeout=30)
        seen: list[int] = []
        sizes: list[int] = []
        for response in call:
            assert not response.HasField("event")
            sizes.append(len(response.events))
            seen += [e.position for e in response.events]
            if seen[-1] >= head:
                call.cancel()
                break
        assert seen == list(range(1, len(seen) + 1)) and seen[-1] >= head  # the watch's own AuditRead may follow
        assert max(sizes) == 8 and all(0 < n <= 8 for n in sizes)
    finally:
        client.close()
        server.close()
