"""The group-commit writer's batch deadline (service/app/writer.py), with a
runner that blocks until the test lets it go: a hung database path fails the
batch in flight UNAVAILABLE within the deadline, refuses new commands at
once, turns alive() false, and clears when the batch comes back. Deadlines
here are tens of milliseconds; nothing touches a database."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime

import pytest

from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.app.ports import StoreUnavailable
from pinlife.app.writer import BATCH_DEADLINE, GroupCommitWriter
from pinlife.domain.outcomes import CheckResult
from tests.clock import FakeClock
from tests.keys import ring
from tests.unit.fakes import FakeStore
from tests.unit.helpers import CORRECT, USER, enroll, verify

DEADLINE = 0.05
CALLER = Caller("ward_office", "terminal-counter-01", office="naka")


class GatedRunner:
    """Answers each command with ("done", cmd) once its gate is open; a
    closed gate is a database path that holds the packets."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[list] = []
        self.alive_answer = True
        self.stopped = False

    async def start(self) -> None:
        pass

    async def run(self, items):
        self.batches.append([cmd for cmd, _ in items])
        await self.gate.wait()
        return [("done", cmd) for cmd, _ in items]

    async def alive(self) -> bool:
        return self.alive_answer

    async def stop(self) -> None:
        self.stopped = True


@contextlib.asynccontextmanager
async def started(runner, deadline=DEADLINE):
    writer = GroupCommitWriter(runner, batch_deadline=deadline)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


async def until(predicate, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


def test_the_default_deadline_is_two_seconds():
    assert BATCH_DEADLINE == 2.0
    assert GroupCommitWriter(GatedRunner()).batch_deadline == BATCH_DEADLINE
    with pytest.raises(ValueError):
        GroupCommitWriter(GatedRunner(), batch_deadline=0)


def test_a_batch_within_its_deadline_is_answered():
    async def scenario():
        async with started(GatedRunner()) as writer:
            return await asyncio.gather(writer.submit("a", CALLER), writer.submit("b", CALLER)), await writer.alive()

    answers, alive = asyncio.run(scenario())
    assert answers == [("done", "a"), ("done", "b")] and alive


def test_a_stalled_batch_fails_unavailable_refuses_new_commands_and_clears_when_it_returns():
    async def scenario():
        runner = GatedRunner()
        async with started(runner) as writer:
            loop = asyncio.get_running_loop()
            runner.gate.clear()  # the database path hangs
            t0 = loop.time()
            in_flight = asyncio.ensure_future(writer.submit("stuck", CALLER))
            await until(lambda: len(runner.batches) == 1)
            queued = asyncio.ensure_future(writer.submit("queued", CALLER))  # behind the stuck batch
            with pytest.raises(StoreUnavailable, match="outcome is unknown: retry with the same request id"):
                await in_flight
            waited = loop.time() - t0
            with pytest.raises(StoreUnavailable, match="nothing was written"):
                await queued
            assert writer.stalled and not await writer.alive()
            with pytest.raises(StoreUnavailable, match="nothing was written"):
                # at once: queued behind the stuck batch it would wait until the gate opens below
                await writer.submit("new", CALLER)
            assert runner.batches == [["stuck"]]  # neither was handed to the runner
            assert not runner.gate.is_set()

            runner.gate.set()  # the path resumes: the late result is dropped
            await until(lambda: not writer.stalled)
            assert await writer.alive()
            after = await writer.submit("after", CALLER)
            return waited, after, runner.batches

    waited, after, batches = asyncio.run(scenario())
    assert waited >= DEADLINE  # failed by the deadline while the path still hung (the gate opens only later)
    assert after == ("done", "after") and batches == [["stuck"], ["after"]]


def test_a_batch_reaches_its_runner_and_its_callers_without_extra_turns_of_the_event_loop():
    """The deadline costs no turn of the event loop: the batch is handed over
    in the turn it is formed, and its callers are answered in the turn the
    runner returns (one turn for the writer to wake, one for the caller). A
    turn of a busy server's loop is a large part of a batch's time."""

    class Immediate(GatedRunner):
        async def run(self, items):
            self.batches.append(turns)
            return [("done", cmd) for cmd, _ in items]

    turns = 0

    async def scenario():
        loop = asyncio.get_running_loop()

        def tick():
            nonlocal turns
            turns += 1
            loop.call_soon(tick)

        runner = Immediate()
        async with started(runner) as writer:
            await asyncio.sleep(0)  # the writer waits on its queue
            loop.call_soon(tick)
            await asyncio.sleep(0)
            before = turns
            answer = await writer.submit("a", CALLER)
            return answer, runner.batches[0] - before, turns - before

    answer, to_runner, to_caller = asyncio.run(scenario())
    assert answer == ("done", "a")
    assert to_runner <= 1 and to_caller <= 2


def test_alive_follows_the_runner_when_nothing_is_stalled():
    async def scenario():
        runner = GatedRunner()
        async with started(runner) as writer:
            runner.alive_answer = False  # e.g. a writer process that died
            return await writer.alive()

    assert asyncio.run(scenario()) is False


def test_stopping_does_not_wait_for_a_stalled_batch():
    async def scenario():
        runner = GatedRunner()
        writer = GroupCommitWriter(runner, batch_deadline=DEADLINE)
        await writer.start()
        runner.gate.clear()
        with pytest.raises(StoreUnavailable):
            await writer.submit("stuck", CALLER)
        await asyncio.wait_for(writer.stop(), 1.0)
        return runner.stopped

    assert asyncio.run(scenario())


def test_stopping_drains_a_batch_within_its_deadline():
    async def scenario():
        runner = GatedRunner()
        async with started(runner, deadline=1.0) as writer:
            runner.gate.clear()
            pending = asyncio.ensure_future(writer.submit("slow", CALLER))
            await until(lambda: len(runner.batches) == 1)
            stopping = asyncio.ensure_future(writer.stop())
            await asyncio.sleep(0.02)
            runner.gate.set()
            await stopping
            writer._task = None  # stopped already; the context manager's stop only stops the runner again
            return await pending

    assert asyncio.run(scenario()) == ("done", "slow")


class HangingStore(FakeStore):
    """The in-memory store, whose transactions hang while `flowing` is clear, on
    the writer thread (as a socket read of a stalled connection does)."""

    def __init__(self):
        super().__init__()
        self.flowing = threading.Event()
        self.flowing.set()

    def unit_of_work(self, integrity=None, lock_terminals=False):
        if not self.flowing.wait(10):
            raise AssertionError("the test never let the store go")
        return super().unit_of_work(integrity, lock_terminals)


def test_the_thread_runner_stalls_and_recovers_and_a_retry_replays_the_late_commit():
    """The real ThreadRunner: the stalled batch commits late; its caller was
    told UNAVAILABLE (outcome unknown) and its retry with the same request
    id gets the committed answer, replayed."""
    store = HangingStore()
    clock = FakeClock(datetime(2026, 4, 1, 1, 30, tzinfo=UTC))
    runner = ThreadRunner(store, ring("k-1", {"k-1": b"k" * 32}), clock)

    async def scenario():
        # A deadline the calls that do not stall meet on a busy machine too (the
        # stalled one hangs until the store is let go).
        async with started(runner, deadline=0.5) as writer:
            await writer.submit(enroll(CORRECT, "card-a"), CALLER)
            store.flowing.clear()
            command = verify(USER, CORRECT[USER], "card-a")
            with pytest.raises(StoreUnavailable, match="outcome is unknown"):
                await writer.submit(command, CALLER)
            assert not await writer.alive()
            store.flowing.set()
            await until(lambda: not writer.stalled)
            assert await writer.alive()
            return await writer.submit(command, CALLER)

    retry = asyncio.run(scenario())
    assert retry.replayed and retry.outcome.result is CheckResult.OK
    assert [e.event_type for e in store.log.stream("card-a")] == ["CardEnrolled", "PinVerified"]


def test_a_writer_cancelled_with_a_batch_in_flight_answers_it_unavailable():
    """The loop is ending (cancelled): the batch's callers are told the
    outcome is unknown, not left waiting."""

    async def scenario():
        runner = GatedRunner()
        async with started(runner) as writer:
            runner.gate.clear()
            in_flight = asyncio.ensure_future(writer.submit("stuck", CALLER))
            await until(lambda: len(runner.batches) == 1)
            writer._task.cancel()
            with pytest.raises(StoreUnavailable, match="the writer stopped; the outcome is unknown"):
                await in_flight
            return runner

    assert asyncio.run(scenario()).stopped


class FailingRunner(GatedRunner):
    """Every command of a batch fails as a full disk makes it fail (the
    writer process hands such errors over as WriterFailure), or is decided."""

    def __init__(self):
        super().__init__()
        self.answer: object = None  # None: answered; else what every command gets

    async def run(self, items):
        self.batches.append([cmd for cmd, _ in items])
        return [self.answer or ("done", cmd) for cmd, _ in items]


def test_a_batch_whose_every_command_fails_undecided_marks_writes_failing_until_health_clears_it():
    from pinlife.app.writer_process import WriterFailure
    from pinlife.domain.errors import PreconditionFailed, PreconditionViolation

    async def scenario():
        runner = FailingRunner()
        seen = []
        async with started(runner) as writer:
            runner.answer = WriterFailure("OperationalError")  # "database or disk is full"
            with pytest.raises(WriterFailure):
                await writer.submit("a", CALLER)
            seen.append(writer.writes_failing)
            runner.answer = None
            await writer.submit("c", CALLER)  # an answer (a status read succeeds on a read-only database) ...
            seen.append(writer.writes_failing)  # ... does not show that writes commit: health's probe does
            writer.writes_failing = False  # PinLife.writes_recovered, after the probe committed
            runner.answer = PreconditionFailed(PreconditionViolation("OUT_OF_HOURS", "offices/x", "closed"))
            with pytest.raises(PreconditionFailed):  # a decided refusal is an answer: writes do not fail
                await writer.submit("b", CALLER)
            seen.append(writer.writes_failing)
            runner.answer = StoreUnavailable("the database is unavailable")  # health's ping covers an outage
            with pytest.raises(StoreUnavailable):
                await writer.submit("d", CALLER)
            seen.append(writer.writes_failing)
        return seen

    assert asyncio.run(scenario()) == [True, True, False, False]
