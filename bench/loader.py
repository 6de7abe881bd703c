"""Fast in-process loading, not over gRPC: commands go straight to
ThreadRunner.process() in big batches (one transaction per batch), the
same batch function (service/app/batch.py, run_batch) the server's writer
process runs.

Every load has a target and a time budget. It stops where it is when the
budget runs out, or earlier (after half the budget) when the rate of
the last batch projects the target beyond 1.5x the budget; the figures say
what was reached and why it stopped, so a slow store never turns the
benchmark into an endless run.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

from bench.common import card_id, log, pins_for, wrong_4digit
from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.domain.commands import EnrollCard, VerifyPin
from pinlife.domain.pins import PinType
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.keys.ring import KeyRing
from pinlife.runtime.clock import system_clock
from pinlife.store.event_store import EventStore

LOADER = Caller("development", "bench-loader")
READERS = 100  # the verify events come from this many card readers, in rotation
# Test data, not an attack: the readers' wrong PINs (20% of the verifies,
# spread over every card) must not throttle them.
LOAD_POLICY = Policy(throttle=ThrottlePolicy(max_distinct_cards=10**9))


@dataclass
class LoadReport:
    what: str
    target: int
    done: int = 0  # commands that succeeded
    failed: int = 0
    seconds: float = 0.0
    budget_s: float = 0.0
    budget_hit: bool = False
    stop_reason: str = ""
    analyze_seconds: float = 0.0
    batch_size: int = 0
    batches: list[tuple[int, float]] = field(default_factory=list)  # (done so far, seconds for this batch)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        firsts = [s for _, s in self.batches[:3]]
        lasts = [s for _, s in self.batches[-3:]]
        return {
            "what": self.what,
            "target": self.target,
            "done": self.done,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "per_s": round(self.rate, 1),
            "budget_s": self.budget_s,
            "budget_hit": self.budget_hit,
            "stop_reason": self.stop_reason,
            "analyze_seconds": round(self.analyze_seconds, 2),
            "batch_size": self.batch_size,
            "first_batches_s": [round(s, 3) for s in firsts],
            "last_batches_s": [round(s, 3) for s in lasts],
        }


def enroll_command(index: int) -> EnrollCard:
    p = pins_for(index)
    return EnrollCard(
        str(uuid.uuid4()),
        card_id(index),
        {
            PinType.RESIDENT_REGISTRY: p.resident_registry,
            PinType.CARD_INFO_INPUT_SUPPORT: p.card_info_input_support,
            PinType.USER_CERTIFICATE: p.user_certificate,
            PinType.SIGNATURE: p.signature,
        },
    )


def _run(writer: ThreadRunner, report: LoadReport, batches, batch_size: int, analyze=None) -> LoadReport:
    started = time.perf_counter()
    next_note = started + 10
    next_analyze = 2 * batch_size
    for make_batch in batches:
        if analyze is not None and report.done >= next_analyze:
            t = time.perf_counter()
            analyze()
            report.analyze_seconds += time.perf_counter() - t
            next_analyze *= 2
        t = time.perf_counter()
        items = make_batch()
        results = writer.process(items)
        errors = [r for r in results if isinstance(r, BaseException)]
        report.failed += len(errors)
        report.done += len(results) - len(errors)
        now = time.perf_counter()
        report.batches.append((report.done, now - t))
        if errors and report.failed == len(errors):
            log(f"  {report.what}: first failure {type(errors[0]).__name__}: {errors[0]}")
        if now >= next_note:
            log(
                f"  {report.what}: {report.done:,}/{report.target:,} in {now - started:.0f} s "
                f"(last batch of {len(items)}: {now - t:.2f} s)"
            )
            next_note = now + 10
        elapsed = now - started
        if report.done >= report.target:
            break
        if elapsed > report.budget_s:
            report.budget_hit, report.stop_reason = True, f"budget of {report.budget_s:.0f} s used"
            break
        if elapsed >= 0.5 * report.budget_s and now > t:
            projected = elapsed + (report.target - report.done) / (len(items) / (now - t))
            if projected > 1.5 * report.budget_s:
                report.budget_hit = True
                report.stop_reason = (
                    f"at the last batch's rate the target would take {projected:.0f} s in all, "
                    f"over 1.5x the {report.budget_s:.0f} s budget"
                )
                break
    else:
        report.stop_reason = "every command sent" + (f", {report.failed:,} failed" if report.failed else "")
    if report.done >= report.target:
        report.stop_reason = "target reached"
    report.seconds = time.perf_counter() - started
    report.batch_size = batch_size
    return report


def _analyzer(store: EventStore):
    """On PostgreSQL, ANALYZE as the tables grow (at 2, 4, 8, ... batches), as
    autovacuum would: without statistics the planner takes the batch's IN-list
    lookups for a large share of the table and scans it (bench.common.pg_analyze)."""
    if store.dialect != "postgresql":
        return None
    from bench.common import pg_analyze

    return lambda: pg_analyze(store.url)


def enroll_cards(store: EventStore, keys: KeyRing, start: int, count: int, *, batch: int, budget_s: float) -> LoadReport:
    """Enrolls cards start .. start+count-1 with all four PINs."""
    writer = ThreadRunner(store, keys, system_clock)
    report = LoadReport(f"enroll {count:,} cards", count, budget_s=budget_s)

    def batches():
        for s in range(start, start + count, batch):
            yield lambda s=s: [(enroll_command(i), LOADER) for i in range(s, min(start + count, s + batch))]

    return _run(writer, report, batches(), batch, _analyzer(store))


def add_verify_events(
    store: EventStore, keys: KeyRing, cards: int, events: int, *, batch: int, budget_s: float, seed: int = 7
) -> LoadReport:
    """About `events` more events from VerifyPin commands spread over the
    cards: mostly right, some wrong (a wrong one is followed by a right one on
    the same card, so cards do not lock and every command is one event)."""
    writer = ThreadRunner(store, keys, system_clock, LOAD_POLICY)
    report = LoadReport(f"add {events:,} verify events", events, budget_s=budget_s)
    rng = random.Random(seed)

    def one_batch():
        items = []
        while len(items) < batch:
            i = rng.randrange(cards)
            right = pins_for(i).user_certificate
            reader = Caller("medical_reader", f"bench-reader-{rng.randrange(READERS):03d}")
            if rng.random() < 0.2:
                items.append((VerifyPin(str(uuid.uuid4()), card_id(i), PinType.USER_CERTIFICATE, wrong_4digit(right)), reader))
            items.append((VerifyPin(str(uuid.uuid4()), card_id(i), PinType.USER_CERTIFICATE, right), reader))
        return items

    def batches():
        for _ in range(0, events, batch):
            yield one_batch

    return _run(writer, report, batches(), batch, _analyzer(store))
