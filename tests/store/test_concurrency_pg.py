"""Several service instances on one PostgreSQL (DESIGN.md §4): each thread
has its own EventStore (own connection pool) and ThreadRunner, as
separate processes would. Never more wrong tries than the limit, exactly one
enrolment, exactly one execution of a request id."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pinlife.app.answers import Answer
from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.domain.commands import SuspendCard
from pinlife.domain.errors import AlreadyExists, LimitReached
from pinlife.domain.outcomes import CheckResult, Enrolled
from pinlife.domain.pins import retry_limit
from pinlife.domain.policy import Policy
from pinlife.store.event_store import EventStore
from tests.keys import INTEGRITY
from tests.store.helpers import CORRECT, COUNTER, SIGNATURE, USER, WRONG, enroll, occurrences, rid, run_ok, verify

pytestmark = pytest.mark.postgres

INSTANCES = 6


@pytest.fixture
def pg_url(databases) -> str:
    return databases.create("postgres")


@pytest.fixture
def instances(pg_url, keys, clock):
    stores = [EventStore(pg_url) for _ in range(INSTANCES)]
    yield [ThreadRunner(s, keys, clock) for s in stores]
    for s in stores:
        s.close()


def in_parallel(writers, work):
    """work(i, writer) on every writer at once (released by a barrier)."""
    barrier = threading.Barrier(len(writers))

    def go(i):
        barrier.wait(timeout=30)
        return work(i, writers[i])

    with ThreadPoolExecutor(len(writers)) as pool:
        return list(pool.map(go, range(len(writers))))


def assert_log_sound(store) -> None:
    assert [e.position for e in store.log.all_events()] == list(range(1, store.log.head_position() + 1))
    assert store.cards.projection() == store.cards.rebuild()
    assert store.integrity.first_broken_link(INTEGRITY) is None


@pytest.mark.parametrize("pin_type", [USER, SIGNATURE], ids=["limit-3", "limit-5"])
def test_racing_wrong_tries_lock_exactly_once(instances, pin_type):
    store = instances[0].store
    run_ok(instances[0], enroll("card-a"), enroll("card-b"))
    limit = retry_limit(pin_type)
    per_instance = 10

    def work(i, w):
        out = []
        for n in range(per_instance):
            # alternate single commands and small batches; card-b traffic interleaves
            if n % 3 == 0:
                out += w.process([(verify("card-a", pin_type, WRONG[pin_type]), Caller("counter", f"t-{i}"))])
            else:
                batch = [verify("card-a", pin_type, WRONG[pin_type]), verify("card-b", USER, CORRECT[USER])]
                out += w.process([(c, Caller("counter", f"t-{i}")) for c in batch])[:1]
        return out

    results = [r for rs in in_parallel(instances, work) for r in rs]
    assert all(isinstance(r, Answer) for r in results), [r for r in results if not isinstance(r, Answer)][:3]
    outcomes = [r.outcome for r in results]
    assert len(outcomes) == INSTANCES * per_instance
    assert sum(o.result is CheckResult.WRONG_PIN for o in outcomes) == limit - 1
    assert sum(o.locked_now for o in outcomes) == 1
    assert sum(o.result is CheckResult.LOCKED and not o.locked_now for o in outcomes) == len(outcomes) - limit

    stream = store.log.stream("card-a")
    kinds = [e.event_type for e in stream]
    attempted = kinds.count("LockedPinAttempted")  # once per terminal and window, the rest counted (repeats.py)
    assert kinds == ["CardEnrolled"] + ["PinVerificationFailed"] * limit + ["PinLocked"] + ["LockedPinAttempted"] * attempted
    assert 1 <= attempted <= INSTANCES
    assert occurrences(store, "card-a", "LockedPinAttempted") == len(outcomes) - limit  # every attempt is counted once
    assert [e.payload["consecutive_failures"] for e in stream[1 : limit + 1]] == list(range(1, limit + 1))
    assert len({e.request_id for e in stream[1:]}) == limit + attempted  # the locking request owns two events
    pin = store.cards.read_card("card-a").pins[pin_type]
    assert pin.locked and pin.consecutive_failures == limit
    assert_log_sound(store)


def test_racing_enrolments_of_one_card_enrol_it_once(instances):
    store = instances[0].store

    def work(i, w):
        return w.process([(enroll("card-a", {USER: f"{1000 + i}"}), Caller("counter", f"t-{i}"))])[0]

    results = in_parallel(instances, work)
    winners = [r for r in results if isinstance(r, Answer)]
    assert len(winners) == 1 and isinstance(winners[0].outcome, Enrolled)
    assert all(isinstance(r, AlreadyExists) for r in results if r not in winners), results
    assert [e.event_type for e in store.log.stream("card-a")] == ["CardEnrolled"]
    # the winner's PIN is the one stored
    won = results.index(winners[0])
    ok = run_ok(instances[0], verify("card-a", USER, f"{1000 + won}"))[0]
    assert ok.outcome.result is CheckResult.OK
    assert_log_sound(store)


@pytest.mark.parametrize("kind", ["verify", "enroll"])
def test_one_request_id_racing_on_several_instances_runs_once(instances, kind):
    store = instances[0].store
    if kind == "verify":
        run_ok(instances[0], enroll("card-a"))
        command = verify("card-a", USER, WRONG[USER], request_id=rid())
    else:
        command = enroll("card-a", request_id=rid())
    head = store.log.head_position()

    results = in_parallel(instances, lambda i, w: w.process([(command, COUNTER)])[0])
    assert all(isinstance(r, Answer) for r in results), results
    assert len({(r.outcome, r.stream_version) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert store.log.head_position() == head + 1
    assert [e.request_id for e in store.log.read_all(head)] == [command.request_id]
    if kind == "verify":
        assert results[0].outcome.remaining_tries == 2
        assert store.cards.read_card("card-a").pins[USER].consecutive_failures == 1
    assert_log_sound(store)


def test_racing_suspensions_of_one_terminal_on_several_instances_keep_its_bound(pg_url, keys, clock):
    """The bound of suspensions per terminal and window (issue 22, item 5) is
    decided on the terminal's row in the write transaction: racing instances
    suspend exactly `bound` cards, the rest are refused and recorded."""
    bound, per_instance = 5, 3
    stores = [EventStore(pg_url) for _ in range(INSTANCES)]
    try:
        writers = [ThreadRunner(s, keys, clock, Policy(suspensions_per_window=bound)) for s in stores]
        cards = [f"card-{i}-{n}" for i in range(INSTANCES) for n in range(per_instance)]
        run_ok(writers[0], *(enroll(c) for c in cards))
        call_centre = Caller("call_center", "call-centre-01")

        def work(i, w):
            return [
                w.process([(SuspendCard.create(rid(), f"card-{i}-{n}", "lost", None), call_centre)])[0]
                for n in range(per_instance)
            ]

        results = [r for rs in in_parallel(writers, work) for r in rs]
        assert sum(isinstance(r, Answer) for r in results) == bound
        assert sum(isinstance(r, LimitReached) for r in results) == len(results) - bound
        store = stores[0]
        assert sum(store.cards.read_card(c).suspended for c in cards) == bound
        refusals = [e for e in store.log.stream("terminal:call-centre-01") if e.event_type == "SuspensionRefused"]
        assert len(refusals) == len(results) - bound
        assert_log_sound(store)
    finally:
        for s in stores:
            s.close()
