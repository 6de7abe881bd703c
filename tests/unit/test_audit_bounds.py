"""The auditors' facade (service/app/audit.py) keeps its integrity runs
bounded and cancellable, and records every call, over the in-memory store
and a fake of the audit reads whose whole-store check the test holds."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import pytest

from pinlife.app.audit import Audit
from pinlife.app.handlers import Caller
from pinlife.bootstrap.instance import make_app
from pinlife.domain.audit import Filter, Order
from pinlife.domain.errors import AtCapacity, InvalidInput
from pinlife.domain.integrity import CheckCancelled, Report
from pinlife.domain.policy import Policy
from pinlife.domain.streams import terminal_stream
from tests.clock import FakeClock
from tests.keys import INTEGRITY, ring
from tests.unit.fakes import FakeStore

KEYS = ring("k-1", {"k-1": b"k" * 32})
AUDITOR = Caller("auditor", "audit-01")


class HeldChecks:
    """AuditReads whose whole-store check runs until the test releases it,
    or until its caller cancels it (as the check's process does)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled_seen = threading.Event()

    def verify(self, card_id, notes, progress, cancelled) -> Report:
        self.started.set()
        progress("cards", 0, 1)
        while not self.release.wait(0.01):
            if cancelled():
                self.cancelled_seen.set()
                raise CheckCancelled("cancelled")
        return Report(events=7)


def audit_records(store: FakeStore) -> list[dict]:
    return [json.loads(e.event.filter) for e in store.log.stream(terminal_stream(AUDITOR.terminal_id))]


def run(scenario) -> FakeStore:
    store = FakeStore()

    async def main() -> None:
        app = make_app(store, KEYS, FakeClock(datetime(2026, 12, 1, tzinfo=UTC)), Policy(), writer="thread")
        await app.start()
        try:
            await scenario(app)
        finally:
            await app.stop()

    asyncio.run(main())
    return store


def test_a_whole_store_check_beyond_the_bound_is_refused_at_once_with_a_retry_and_recorded():
    reads = HeldChecks()

    async def scenario(app) -> None:
        audit = Audit(reads, app, INTEGRITY, lambda exc: False, max_integrity_runs=1)
        first = audit.verify(AUDITOR, "", [])
        assert (await anext(first))[0] == "progress"  # running, holding the one run
        with pytest.raises(AtCapacity) as refused:
            await anext(audit.verify(AUDITOR, "", []))
        assert refused.value.retry_after.total_seconds() > 0
        reads.release.set()
        assert [kind async for kind, _ in first][-1] == "report"

    store = run(scenario)
    assert audit_records(store) == [
        {"card": "", "checkpoints": 0, "refused": "at_capacity"},
        {"card": "", "checkpoints": 0},
    ]


def test_a_cancelled_check_stops_and_its_run_is_recorded_as_cancelled():
    reads = HeldChecks()

    async def scenario(app) -> None:
        audit = Audit(reads, app, INTEGRITY, lambda exc: False, max_integrity_runs=1)
        call = audit.verify(AUDITOR, "", [])
        assert (await anext(call))[0] == "progress"
        await call.aclose()  # the auditor went away
        assert await asyncio.to_thread(reads.cancelled_seen.wait, 10)  # the check saw it and stopped
        for _ in range(1000):  # its record is written, and its run let go, by tasks of their own
            if not audit._pending and not audit.integrity_runs.locked():
                break
            await asyncio.sleep(0.01)
        again = audit.verify(AUDITOR, "", [])  # the run it held is free again
        assert (await anext(again))[0] == "progress"
        reads.release.set()
        assert [kind async for kind, _ in again][-1] == "report"

    store = run(scenario)
    assert audit_records(store) == [
        {"card": "", "checkpoints": 0, "ended": "cancelled"},
        {"card": "", "checkpoints": 0},
    ]


def test_a_call_refused_as_bad_input_is_recorded_without_what_might_be_an_individual_number():
    async def scenario(app) -> None:
        audit = Audit(HeldChecks(), app, INTEGRITY, lambda exc: False)
        for card in ("123456789018", "card-1"):  # an Individual Number is never recorded
            with pytest.raises(InvalidInput):
                await audit.history(AUDITOR, card, Filter(), Order.OLDEST_FIRST, 5000, "")
        with pytest.raises(InvalidInput):
            await audit.query(AUDITOR, Filter(), Order.OLDEST_FIRST, 0, "forged-token")
        with pytest.raises(InvalidInput):
            await anext(audit.watch(AUDITOR, 2**63))

    store = run(scenario)
    records = [(e.event.rpc, e.event.card_id, json.loads(e.event.filter)) for e in store.log.stream(terminal_stream("audit-01"))]
    assert records == [
        ("GetCardHistory", "", {"refused": "invalid_argument", "fields": ["card_id"]}),
        ("GetCardHistory", "card-1", {"refused": "invalid_argument", "fields": ["page_size"]}),
        ("QueryEvents", "", {"refused": "invalid_argument", "fields": ["page_token"]}),
        ("WatchEvents", "", {"refused": "invalid_argument", "fields": ["after_position"]}),
    ]
