"""The integrity verdict while terminals keep writing (issue: an auditor's
check under ordinary traffic reported tampering that did not happen). The
check judges one snapshot of the store (EventStore.snapshot), so a card
written between two of its reads never looks forged, on either store."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest

from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.domain.integrity import CheckCancelled
from pinlife.runtime.clock import system_clock
from pinlife.store.check import CLOCK_TOLERANCE, check_card, check_store
from pinlife.store.check_process import check_store_in_process
from pinlife.store.tables import events
from tests.clock import FakeClock
from tests.store.helpers import CORRECT, USER, WRONG, enroll, run_ok, verify

CARDS = [f"card-w{i:03d}" for i in range(150)]


def test_the_verdict_is_intact_while_four_writers_keep_verifying(store, keys):
    """Four writers verify (right and wrong, so projections, heads and MACs
    all change) while the whole store and single cards are checked again and
    again; every verdict is intact, and the log did grow during the checks."""
    runner = ThreadRunner(store, keys, system_clock)
    run_ok(runner, *[enroll(card) for card in CARDS])
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        mine = CARDS[worker::4]
        n = 0
        try:
            while not stop.is_set():
                card = mine[n % len(mine)]
                pin = CORRECT[USER] if n % 2 else WRONG[USER]  # never three wrong in a row: no lock
                runner.process([(verify(card, USER, pin), _caller(worker))])
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        grew, checks = 0, 0
        while grew < 3 and checks < 40:  # until three checks ran while the log grew (the writers share the GIL)
            checks += 1
            before = store.log.head_position()
            report = check_store(store, keys)
            assert report.intact, report.as_dict()
            one = check_card(store, keys, CARDS[7])
            assert one.intact, one.as_dict()
            grew += store.log.head_position() > before
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert grew >= 3, "the writers did not write while the store was checked"
    assert check_store(store, keys).intact


def _caller(worker: int) -> Caller:
    return Caller("medical_reader", f"reader-{worker}")


def test_a_whole_store_check_in_its_own_process_reports_as_in_this_one_and_stops_when_cancelled(store, keys):
    runner = ThreadRunner(store, keys, system_clock)
    run_ok(runner, *[enroll(card) for card in CARDS[:20]], verify(CARDS[0], USER, WRONG[USER]))
    phases: list[str] = []
    report = check_store_in_process(
        store.url, keys, [], lambda phase, done, total: phases.append(phase), lambda: False, CLOCK_TOLERANCE
    )
    assert report == check_store(store, keys)
    assert report.intact and report.cards == 20 and {"positions", "cards", "terminals", "checkpoints"} <= set(phases)

    seen = threading.Event()
    children: set[int] = set()

    def cancelled() -> bool:
        children.update(_child_processes())
        return seen.is_set()

    with pytest.raises(CheckCancelled):
        check_store_in_process(store.url, keys, [], lambda *progress: seen.set(), cancelled, CLOCK_TOLERANCE)
    assert children and not any(os.path.exists(f"/proc/{pid}") for pid in children)  # the check's process is gone (reaped)


def _child_processes() -> set[int]:
    """This process's children started by runtime/child.py."""
    pids = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        if b"runtime.child import _enter" in cmd.read():
                            pids.add(int(pid))
                except FileNotFoundError:
                    pass
    return pids


def test_a_clock_stepped_back_is_reported_as_such_and_the_store_stays_intact(store, keys):
    """A wall clock stepped back (or two instances' clocks apart) is not
    tampering: within [audit] clock_skew_seconds it is not even mentioned;
    beyond, it is reported as a clock step, and the verdict stays intact."""
    clock = FakeClock()
    runner = ThreadRunner(store, keys, clock)
    run_ok(runner, enroll("card-c1"), enroll("card-c2"))
    clock.advance(seconds=-3)
    run_ok(runner, verify("card-c1", USER, CORRECT[USER]))
    clock.advance(seconds=-10)
    run_ok(runner, verify("card-c2", USER, WRONG[USER]))
    lenient = check_store(store, keys, clock_skew=timedelta(seconds=30))
    assert lenient.intact and lenient.first_clock_step is None
    strict = check_store(store, keys, clock_skew=timedelta(seconds=5))
    assert strict.intact and strict.first_unlawful is None
    assert (strict.clock_steps, strict.first_clock_step) == (
        1,
        {"stream_id": "card-c2", "version": 2, "seconds_back": 13.0, "tolerated_seconds": 5.0},
    )


BAD_ROWS = {  # a row of the log as anyone who may INSERT into it can leave one (the service's own role may)
    "unknown type": {"event_type": "NoSuchEvent"},
    "newer schema": {"schema_version": 99},
    "payload not an object": {"payload": "text"},
    "payload missing a field": {"event_type": "PinVerificationFailed", "payload": {"purpose": "verify"}},
    "unknown PIN type": {"pin_type": "no_such_pin"},
    "unknown purpose": {"event_type": "LockedPinAttempted", "payload": {"purpose": "nothing"}},
}


@pytest.mark.parametrize("shape", sorted(BAD_ROWS))
def test_a_row_the_check_cannot_read_is_a_finding_at_its_position_not_a_crash(store, keys, shape):
    runner = ThreadRunner(store, keys, system_clock)
    run_ok(runner, enroll("card-b1"), verify("card-b1", USER, CORRECT[USER]))
    head = store.log.head_position()
    row = dict(
        position=head + 1,
        stream_id="card-b1",
        stream_kind="card",
        version=3,
        event_id="bad-row-0001",
        event_type="PinVerified",
        schema_version=1,
        occurred_at=datetime.now(UTC),
        pin_type="user_certificate",
        channel="medical_reader",
        terminal_id="reader-1",
        request_id="r-1",
        payload={},
        prev_hash="0" * 64,
        hash="1" * 64,
        key_id=None,
        office=None,
    )
    with store.writer.begin() as conn:
        conn.execute(events.insert().values(**{**row, **BAD_ROWS[shape]}))
    report = check_store(store, keys)
    assert not report.intact
    assert report.first_unreadable is not None and report.first_unreadable["position"] == head + 1
    assert report.first_broken_link is not None  # its link does not verify either
    assert check_card(store, keys, "card-b1").unreadable_count == 1
