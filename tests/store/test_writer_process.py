"""The writer process (service/app/writer_process.py) against a real store
of each backend: answers and errors cross the process boundary intact, an
unexpected error fails only its own command, and a writer process that dies
(crash-only) costs the batch in flight an UNAVAILABLE, fails every later
batch at once without writing, reports its death once, and is not restarted
(the server exits for its supervisor)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from pinlife.app.ports import IntegrityViolation, StoreUnavailable
from pinlife.app.writer import GroupCommitWriter
from pinlife.app.writer_process import ProcessRunner
from pinlife.bootstrap.writer_store import WriterStore
from pinlife.domain.commands import ResetPin
from pinlife.domain.documents import Applicant, DocumentType
from pinlife.domain.errors import DomainError, FieldViolation, InvalidInput, NotFound, PreconditionFailed, PreconditionViolation
from pinlife.domain.outcomes import CheckResult
from pinlife.domain.policy import Policy
from pinlife.domain.throttle import Throttled
from pinlife.runtime.clock import ServiceClock, system_clock
from tests.store.helpers import CORRECT, COUNTER, USER, WRONG, assert_consistent, enroll, rid, verify


def run_async(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def running_writer(store, keys, deaths: list | None = None):
    """A group-commit writer with its writer process, stopped on the way out;
    each death it reports is appended to `deaths`."""
    on_death = (lambda: deaths.append(1)) if deaths is not None else (lambda: None)
    writer = GroupCommitWriter(ProcessRunner(WriterStore(store.url), keys, system_clock, Policy(), 3, "json", on_death=on_death))
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
                writer,
                verify("card-p", USER, CORRECT[USER], same_id),
                verify("card-p", USER, WRONG[USER]),
                verify("card-none", USER, CORRECT[USER]),
            )
            reused = (await gather(writer, verify("card-other", USER, CORRECT[USER], same_id)))[0]
            replay = (await gather(writer, verify("card-p", USER, CORRECT[USER], same_id)))[0]
        return ok, wrong, unknown, reused, replay

    ok, wrong, unknown, reused, replay = run_async(scenario())
    assert ok.outcome.result is CheckResult.OK and not ok.replayed
    assert wrong.outcome.result is CheckResult.WRONG_PIN and wrong.outcome.remaining_tries == 2
    assert isinstance(unknown, NotFound)
    assert isinstance(reused, InvalidInput) and [v.field for v in reused.violations] == ["request_id"]
    assert replay.replayed and replay.outcome == ok.outcome
    assert [e.event_type for e in store.log.stream("card-p")] == ["CardEnrolled", "PinVerified", "PinVerificationFailed"]
    assert_consistent(store)


def test_a_kept_refusal_is_stored_and_replayed_across_the_process_boundary(store, keys):
    """A refused reset (the holder's card not recorded) is kept in the store,
    MACed, and raised again to a retry marked replayed, even with the
    documents now complete; nothing more appended."""
    refused = ResetPin.create("reset-kept-1", "card-p", USER, "5555", Applicant.HOLDER, [], False, None)
    complete = ResetPin.create(
        "reset-kept-1", "card-p", USER, "5555", Applicant.HOLDER, [(DocumentType.MY_NUMBER_CARD, "")], False, None
    )

    async def scenario():
        async with running_writer(store, keys) as writer:
            await gather(writer, enroll("card-p"))
            [first] = await gather(writer, refused)
        async with running_writer(store, keys) as writer:  # a fresh process: read back from the store
            return first, *(await gather(writer, refused, complete))

    first, again, with_documents = run_async(scenario())
    assert isinstance(first, PreconditionFailed) and not first.replayed
    for replayed in (again, with_documents):
        assert isinstance(replayed, PreconditionFailed) and replayed.replayed
        assert (str(replayed), replayed.violations) == (str(first), first.violations)
    assert [e.event_type for e in store.log.stream("card-p")] == ["CardEnrolled", "CounterProcedureRefused"]
    assert_consistent(store)


def test_an_unexpected_error_fails_only_its_own_command(store, keys):
    async def scenario():
        async with running_writer(store, keys) as writer:
            await gather(writer, enroll("card-good"), enroll("card-damaged"))
            with store.writer.begin() as conn:  # a damaged store: a verifier is missing (the card's MAC covers it)
                conn.execute(text("DELETE FROM secrets WHERE card_id = 'card-damaged'"))
            return await gather(writer, verify("card-good", USER, CORRECT[USER]), verify("card-damaged", USER, CORRECT[USER]))

    good, damaged = run_async(scenario())
    assert good.outcome.result is CheckResult.OK
    assert isinstance(damaged, IntegrityViolation) and damaged.stream_id == "card-damaged"  # crosses the process as itself
    assert [e.event_type for e in store.log.stream("card-damaged")] == ["CardEnrolled"]


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


async def kill_while_idle(runner: ProcessRunner) -> int:
    """kill -9 of the writer process between batches, until the server has
    noticed (nothing was in flight); its pid."""
    pid = runner.pid
    os.kill(pid, signal.SIGKILL)
    await until(lambda: runner.dead)
    return pid


def test_a_writer_process_killed_during_a_batch_fails_it_unavailable_and_takes_no_more(store, keys):
    deaths: list = []

    async def scenario():
        async with running_writer(store, keys, deaths) as writer:
            runner = writer.runner
            await gather(writer, enroll("card-k"))
            with write_lock_held(store):
                in_flight = asyncio.ensure_future(gather(writer, verify("card-k", USER, WRONG[USER])))
                await until(lambda: runner._waiting is not None)  # sent: the child waits for the lock
                await asyncio.sleep(0.3)
                os.kill(runner.pid, signal.SIGKILL)
                lost = await in_flight
            after = await gather(writer, verify("card-k", USER, CORRECT[USER]))
            return lost, after, await writer.alive()

    lost, after, alive = run_async(scenario())
    # the batch in flight when the process died: outcome unknown -> UNAVAILABLE
    assert isinstance(lost[0], StoreUnavailable) and "outcome is unknown" in str(lost[0])
    # crash-only: no new writer; later batches fail at once, writing nothing
    assert isinstance(after[0], StoreUnavailable) and "nothing was written" in str(after[0])
    assert not alive and deaths == [1]
    assert [e.event_type for e in store.log.stream("card-k")] == ["CardEnrolled"]
    assert_consistent(store)


def test_a_writer_process_that_died_between_batches_is_reported_and_the_next_batch_writes_nothing(store, keys):
    deaths: list = []

    async def scenario():
        async with running_writer(store, keys, deaths) as writer:
            await gather(writer, enroll("card-b"))
            await kill_while_idle(writer.runner)
            return await gather(writer, verify("card-b", USER, WRONG[USER])), await writer.alive()

    [answer], alive = run_async(scenario())
    assert isinstance(answer, StoreUnavailable) and "nothing was written" in str(answer)
    assert not alive and deaths == [1]
    assert [e.event_type for e in store.log.stream("card-b")] == ["CardEnrolled"]
    assert_consistent(store)


def test_the_writer_process_ignores_the_sigterm_aimed_at_its_server(store, keys):
    """A supervisor may signal the whole process group: the writer keeps
    serving batches while the server drains, and stops when told to."""

    async def scenario():
        async with running_writer(store, keys) as writer:
            await gather(writer, enroll("card-g"))
            os.kill(writer.runner.pid, signal.SIGTERM)
            await asyncio.sleep(0.3)
            return await gather(writer, verify("card-g", USER, CORRECT[USER])), await writer.alive()

    [answer], alive = run_async(scenario())
    assert alive and answer.outcome.result is CheckResult.OK


def test_the_writer_process_refuses_a_clock_it_cannot_carry():
    with pytest.raises(ValueError, match="ServiceClock"):
        ProcessRunner(WriterStore("sqlite://"), None, lambda: None, Policy(), 3, "json")


def test_a_moved_service_clock_crosses_into_the_writer_process(store, keys):
    """The service clock is one value: events written by the writer process
    carry the moved time, not the child's system clock."""
    fixed = datetime(2027, 1, 9, 1, 30, tzinfo=UTC)  # a 2nd Saturday, 10:30 in Tokyo

    async def scenario():
        writer = GroupCommitWriter(ProcessRunner(WriterStore(store.url), keys, ServiceClock(fixed=fixed), Policy(), 3, "json"))
        await writer.start()
        try:
            await gather(writer, enroll("card-t"))
        finally:
            await writer.stop()

    run_async(scenario())
    assert [e.occurred_at for e in store.log.stream("card-t")] == [fixed]


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


def test_a_writer_process_that_does_not_start_in_time_is_killed_and_reported(store, keys):
    async def scenario():
        batches = ProcessRunner(WriterStore(store.url), keys, system_clock, Policy(), 3, "json", start_timeout=0.01)
        with pytest.raises(RuntimeError, match="did not start within"):
            await batches.start()
        proc = batches._proc
        batches._disconnect()
        exitcode = await asyncio.get_running_loop().run_in_executor(None, batches._reap)
        return proc, exitcode

    proc, exitcode = run_async(scenario())
    assert not proc.is_alive()
    assert exitcode == -signal.SIGKILL
