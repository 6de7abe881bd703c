"""The writer process (service/app/writer_process.py) against a real store
of each backend: answers and errors cross the process boundary intact, an
unexpected error fails only its own command, and a writer process that dies
costs the batch in flight an UNAVAILABLE, not the service (one that died
between batches is replaced before the next one, which then runs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from service.app.writer import GroupCommitWriter
from service.app.writer_process import RESTART_BACKOFF_S, ProcessRunner, WriterFailure
from service.clock import ServiceClock, system_clock
from service.domain.policy import Policy
from service.domain.decide import CheckResult
from service.domain.errors import DomainError, FieldViolation, InvalidInput, NotFound, PreconditionFailed, PreconditionViolation
from service.domain.throttle import Throttled
from service.app.ports import StoreUnavailable
from tests.store.helpers import COUNTER, CORRECT, USER, WRONG, assert_consistent, enroll, rid, verify


def run_async(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def running_writer(store, keys):
    """A group-commit writer with its writer process, stopped on the way out."""
    writer = GroupCommitWriter(ProcessRunner(store.url, keys, system_clock, Policy(), 3, "json"))
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


async def gather(writer: GroupCommitWriter, *commands):
    return await asyncio.gather(*(writer.submit(c, COUNTER) for c in commands), return_exceptions=True)


def test_answers_and_domain_errors_cross_the_process_boundary(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            assert writer.runner.pid not in (None, os.getpid())
            [enrolled] = await gather(writer, enroll("card-p"))
            assert enrolled.stream_version == 1
            same_id = rid()
            ok, wrong, unknown = await gather(
                writer, verify("card-p", USER, CORRECT[USER], same_id), verify("card-p", USER, WRONG[USER]),
                verify("card-none", USER, CORRECT[USER]),
            )  # fmt: skip
            reused = (await gather(writer, verify("card-other", USER, CORRECT[USER], same_id)))[0]
            replay = (await gather(writer, verify("card-p", USER, CORRECT[USER], same_id)))[0]
        return ok, wrong, unknown, reused, replay

    ok, wrong, unknown, reused, replay = run_async(scenario())
    assert ok.outcome.result is CheckResult.OK and not ok.replayed
    assert wrong.outcome.result is CheckResult.WRONG_PIN and wrong.outcome.remaining_tries == 2
    assert isinstance(unknown, NotFound)
    assert isinstance(reused, InvalidInput) and [v.field for v in reused.violations] == ["request_id"]
    assert replay.replayed and replay.outcome == ok.outcome
    assert [e.event_type for e in store.stream("card-p")] == ["CardEnrolled", "PinVerified", "PinVerificationFailed"]
    assert_consistent(store)


def test_an_unexpected_error_fails_only_its_own_command(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            await gather(writer, enroll("card-good"), enroll("card-damaged"))
            with store.writer.begin() as conn:  # a damaged store: a verifier is missing
                conn.execute(text("DELETE FROM secrets WHERE card_id = 'card-damaged'"))
            return await gather(writer, verify("card-good", USER, CORRECT[USER]), verify("card-damaged", USER, CORRECT[USER]))

    good, damaged = run_async(scenario())
    assert good.outcome.result is CheckResult.OK
    assert isinstance(damaged, WriterFailure) and str(damaged) == "MissingVerifier"
    assert [e.event_type for e in store.stream("card-damaged")] == ["CardEnrolled"]


@contextlib.contextmanager
def write_lock_held(store):
    """Another connection holds the write lock: the writer process's next
    transaction waits for it (SQLite's busy timeout, PostgreSQL's lock)."""
    with store.writer.begin() as conn:  # SQLite: BEGIN IMMEDIATE
        if store.dialect == "postgresql":
            conn.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))
        yield


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def kill_while_idle(batches: ProcessRunner) -> int:
    """kill -9 of the writer process between batches, until the server has
    noticed (nothing was in flight); its pid."""
    pid = batches.pid
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not batches.running)
    return pid


def test_a_writer_process_killed_during_a_batch_fails_it_unavailable_and_is_replaced(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            batches = writer.runner
            await gather(writer, enroll("card-k"))
            first = batches.pid
            with write_lock_held(store):
                in_flight = asyncio.ensure_future(gather(writer, verify("card-k", USER, WRONG[USER])))
                await until(lambda: batches._waiting is not None)  # sent: the child waits for the lock
                await asyncio.sleep(0.3)
                os.kill(first, signal.SIGKILL)
                lost = await in_flight
            after = await gather(writer, verify("card-k", USER, CORRECT[USER]))
            return first, batches.pid, lost, after

    first, second, lost, after = run_async(scenario())
    assert second not in (None, first)
    # the batch in flight when the process died: outcome unknown -> UNAVAILABLE
    assert isinstance(lost[0], StoreUnavailable) and "outcome is unknown" in str(lost[0])
    assert after[0].outcome.result is CheckResult.OK
    assert [e.event_type for e in store.stream("card-k")] == ["CardEnrolled", "PinVerified"]
    assert_consistent(store)


def test_a_writer_process_that_died_between_batches_is_replaced_before_the_next_one(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            batches = writer.runner
            await gather(writer, enroll("card-b"))
            first = await kill_while_idle(batches)
            answers = await gather(writer, verify("card-b", USER, WRONG[USER]))
            return first, batches.pid, answers

    first, second, [answer] = run_async(scenario())
    assert second not in (None, first)
    assert answer.outcome.result is CheckResult.WRONG_PIN  # the batch was not lost: it ran on the new process
    assert_consistent(store)


def test_ensure_running_starts_a_writer_that_died_while_idle(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            batches = writer.runner
            first = await kill_while_idle(batches)
            return first, await writer.ensure_running(), batches.pid, await gather(writer, enroll("card-e"))

    first, running, second, [enrolled] = run_async(scenario())
    assert running and second not in (None, first)
    assert enrolled.stream_version == 1


def test_the_writer_process_refuses_a_clock_it_cannot_carry():
    with pytest.raises(ValueError, match="ServiceClock"):
        ProcessRunner("sqlite://", None, lambda: None, Policy(), 3, "json")


def test_a_moved_service_clock_crosses_into_the_writer_process(store, keys):
    """The service clock is one value: events written by the writer process
    carry the moved time, not the child's system clock."""
    fixed = datetime(2027, 1, 9, 1, 30, tzinfo=timezone.utc)  # a 2nd Saturday, 10:30 in Tokyo

    async def scenario():
        writer = GroupCommitWriter(ProcessRunner(store.url, keys, ServiceClock(fixed=fixed), Policy(), 3, "json"))
        await writer.start()
        try:
            await gather(writer, enroll("card-t"))
        finally:
            await writer.stop()

    run_async(scenario())
    assert [e.occurred_at for e in store.stream("card-t")] == [fixed]


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput([FieldViolation("pin", "must be 4 digits"), FieldViolation("card_id", "is required")]),
        PreconditionFailed(PreconditionViolation("PIN_NOT_SET", "signature", "no such PIN")),
        NotFound("card card-x is not enrolled"),
        Throttled("terminal-1", timedelta(seconds=90)),
    ],
    ids=lambda e: type(e).__name__,
)
def test_domain_errors_survive_pickling_with_their_details(error: DomainError):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_a_writer_that_cannot_be_restarted_is_tried_again_with_the_next_batch(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            batches = writer.runner
            real_start, starts = batches._start_child, []

            async def start_fails_once():
                starts.append(1)
                if len(starts) == 1:
                    raise RuntimeError("cannot start a process")
                await real_start()

            batches._start_child = start_fails_once
            await gather(writer, enroll("card-r"))
            await kill_while_idle(batches)
            no_writer = await gather(writer, verify("card-r", USER, WRONG[USER]))  # the restart fails
            running_after_failure = batches.running
            t0 = asyncio.get_running_loop().time()
            backing_off = await gather(writer, verify("card-r", USER, WRONG[USER]))  # no start tried: fails at once
            backing_off_s = asyncio.get_running_loop().time() - t0
            await asyncio.sleep(RESTART_BACKOFF_S)
            restarted = await gather(writer, verify("card-r", USER, WRONG[USER]))  # restarted here
            after = await gather(writer, verify("card-r", USER, CORRECT[USER]))
            return no_writer, running_after_failure, backing_off, backing_off_s, restarted, after, len(starts)

    no_writer, running_after_failure, backing_off, backing_off_s, restarted, after, starts = run_async(scenario())
    assert isinstance(no_writer[0], StoreUnavailable) and "nothing was written" in str(no_writer[0])
    assert not running_after_failure
    assert isinstance(backing_off[0], StoreUnavailable) and backing_off_s < 0.2
    assert starts == 2
    assert restarted[0].outcome.result is CheckResult.WRONG_PIN
    assert after[0].outcome.result is CheckResult.OK
    assert [e.event_type for e in store.stream("card-r")] == ["CardEnrolled", "PinVerificationFailed", "PinVerified"]


def test_a_writer_process_that_does_not_start_in_time_is_killed_and_reported(store, keys):
    async def scenario():
        batches = ProcessRunner(store.url, keys, system_clock, Policy(), 3, "json", start_timeout=0.01)
        with pytest.raises(RuntimeError, match="did not start within"):
            await batches.start()
        proc = batches._proc
        batches._disconnect()
        exitcode = await asyncio.get_running_loop().run_in_executor(None, batches._reap)
        return proc, exitcode

    proc, exitcode = run_async(scenario())
    assert not proc.is_alive()
    assert exitcode == -signal.SIGKILL
