"""Repeated refusals and attempts are recorded once per terminal, key and
window, with a count (service/domain/repeats.py; docs/audit.md), over gRPC
on SQLite and PostgreSQL: 500 attempts on a locked PIN, 100 of them at
once, leave two events on the card's history whose counts add up with what
the terminal's row holds; a proxy inquiry re-issued 200 times appends one
inquiry and one refusal; the history stays lawful and intact."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta

import pytest

from pinlife.domain import repeats
from pinlife.domain.streams import terminal_stream
from pinlife.store.tables import terminals
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.clock import FakeClock
from tests.e2e.harness import Client, ThreadedServer
from tests.keys import INTEGRITY
from tests.procedures import CALLERS, TUESDAY_10, USER, enroll, lock, proxy_request, refused, rid


@pytest.fixture
def clock():
    return FakeClock(TUESDAY_10.astimezone(UTC))


@pytest.fixture
def server(db_url, keys, clock):
    srv = ThreadedServer(db_url, keys, clock=clock)
    yield srv
    srv.close()


@pytest.fixture
def clients(server):
    made = {name: Client(server.target, t, office=o, chain=c) for name, (t, o, c) in CALLERS.items()}
    made["auditor"] = Client(server.target, "auditor-e2e")
    yield made
    for c in made.values():
        c.close()


def pending(server, terminal_id: str) -> dict:
    with server.store.reader.begin() as conn:
        row = conn.execute(terminals.select().where(terminals.c.terminal_id == terminal_id)).one()
    return repeats.from_json(row.repeats)


def intact(server, auditor: Client) -> None:
    report = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(), timeout=60))[-1].report
    assert report.intact and not report.problems, report
    assert server.store.cards.rebuild() == server.store.cards.projection()
    assert server.store.integrity.first_broken_link(INTEGRITY) is None


def test_500_attempts_on_a_locked_pin_leave_two_events_with_the_count(server, clients, clock):
    reader, auditor = clients["reader"], clients["auditor"]
    enroll(clients["naka"], "card-R1")
    lock(reader, "card-R1", USER, "0000", 3)
    before = len(server.store.log.stream("card-R1"))

    def attempt(_: int) -> int:
        req = ppb.VerifyPinRequest(request_id=rid(), card_id="card-R1", pin_type=USER, pin="0000")
        return reader.pins.VerifyPin(req, timeout=30, metadata=reader.metadata).check.result

    with ThreadPoolExecutor(16) as pool:  # 100 at once: concurrent batches decide one count
        assert set(pool.map(attempt, range(100))) == {pb.CHECK_RESULT_LOCKED}
    assert {attempt(i) for i in range(200)} == {pb.CHECK_RESULT_LOCKED}
    clock.advance(minutes=10)  # the next window: its first attempt is recorded with the count
    assert {attempt(i) for i in range(200)} == {pb.CHECK_RESULT_LOCKED}

    history = auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-R1"), timeout=10).events[before:]
    assert [e.event_type for e in history] == ["LockedPinAttempted", "LockedPinAttempted"]
    counts = [e.payload.locked_pin_attempted.repeated for e in history]
    assert counts == [0, 299] and all(e.schema_version == 2 for e in history)
    (left,) = pending(server, "clinic-reader-01").values()
    assert 2 + sum(counts) + left.repeats == 500  # every attempt is an event, or counted: none lost
    assert server.store.log.stream(terminal_stream("clinic-reader-01")) == []
    intact(server, auditor)


def test_a_proxy_inquiry_reissued_200_times_appends_one_inquiry_and_one_refusal(server, clients, clock):
    naka, auditor = clients["naka"], clients["auditor"]
    enroll(naka, "card-R2")
    first = proxy_request(naka, "card-R2")
    for _ in range(200):
        err = refused(lambda: proxy_request(naka, "card-R2"))
        assert "is open" in err.details()
    types = [e.event_type for e in server.store.log.stream("card-R2")]
    assert types == ["CardEnrolled", "ProxyInquiryIssued", "ResetRefused"]
    clock.advance(minutes=61)  # an hour on, a new inquiry supersedes the first
    second = proxy_request(naka, "card-R2")
    assert second.inquiry_id != first.inquiry_id
    types = [e.event_type for e in server.store.log.stream("card-R2")]
    assert types[3:] == ["ProxyInquiryClosed", "ProxyInquiryIssued"]
    # a refused checklist names the PIN type it was for, and the audit's PIN type filter finds it
    bad = cpb.RequestProxyResetRequest(request_id=rid(), card_id="card-R2", pin_type=USER, documents=[])
    refused(lambda: naka.counter.RequestProxyReset(bad, timeout=10, metadata=naka.metadata))
    query = apb.QueryEventsRequest(filter=apb.EventFilter(event_types=["CounterProcedureRefused"], pin_type=USER))
    found = auditor.audit.QueryEvents(query, timeout=10).events
    assert [(e.stream_id, e.pin_type) for e in found] == [("card-R2", USER)]
    intact(server, auditor)
    assert clock.now - TUESDAY_10.astimezone(UTC) < timedelta(hours=2)
