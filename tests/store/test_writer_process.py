"""The writer process (service/app/writer_process.py) against a real store
of each backend: answers and errors cross the process boundary intact, an
unexpected error fails only its own command, and a writer process that dies
costs the batch in flight an UNAVAILABLE, not the service."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
from datetime import timedelta

import pytest
from sqlalchemy import text

from service.app.writer import GroupCommitWriter
from service.app.writer_process import ProcessBatches, WriterFailure
from service.clock import system_clock
from service.domain.decide import CheckResult
from service.domain.errors import DomainError, FieldViolation, InvalidInput, NotFound, PreconditionFailed, PreconditionViolation
from service.domain.throttle import Throttled
from service.store.event_store import StoreUnavailable
from tests.store.helpers import COUNTER, CORRECT, USER, WRONG, assert_consistent, enroll, rid, verify


def run_async(coro):
    return asyncio.run(coro)


async def started(store, keys) -> GroupCommitWriter:
    writer = GroupCommitWriter(store, keys, system_clock, separate_process=True)
    await writer.start()
    return writer


async def gather(writer: GroupCommitWriter, *commands):
    return await asyncio.gather(*(writer.submit(c, COUNTER) for c in commands), return_exceptions=True)


def test_answers_and_domain_errors_cross_the_process_boundary(store, keys):
    async def scenario():
        writer = await started(store, keys)
        try:
            assert writer._batches.pid not in (None, os.getpid())
            [enrolled] = await gather(writer, enroll("card-p"))
            assert enrolled.stream_version == 1
            same_id = rid()
            ok, wrong, unknown = await gather(
                writer, verify("card-p", USER, CORRECT[USER], same_id), verify("card-p", USER, WRONG[USER]),
                verify("card-none", USER, CORRECT[USER]),
            )  # fmt: skip
            reused = (await gather(writer, verify("card-other", USER, CORRECT[USER], same_id)))[0]
            replay = (await gather(writer, verify("card-p", USER, CORRECT[USER], same_id)))[0]
        finally:
            await writer.stop()
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
        writer = await started(store, keys)
        try:
            await gather(writer, enroll("card-good"), enroll("card-damaged"))
            with store.writer.begin() as conn:  # a damaged store: a verifier is missing
                conn.execute(text("DELETE FROM pin_verifiers WHERE card_id = 'card-damaged'"))
            return await gather(writer, verify("card-good", USER, CORRECT[USER]), verify("card-damaged", USER, CORRECT[USER]))
        finally:
            await writer.stop()

    good, damaged = run_async(scenario())
    assert good.outcome.result is CheckResult.OK
    assert isinstance(damaged, WriterFailure) and str(damaged) == "MissingVerifier"
    assert [e.event_type for e in store.stream("card-damaged")] == ["CardEnrolled"]


def test_a_killed_writer_process_fails_its_batch_unavailable_and_is_replaced(store, keys):
    async def scenario():
        writer = await started(store, keys)
        try:
            await gather(writer, enroll("card-k"))
            first = writer._batches.pid
            os.kill(first, signal.SIGKILL)
            lost = await gather(writer, verify("card-k", USER, WRONG[USER]))
            after = await gather(writer, verify("card-k", USER, CORRECT[USER]))
            return first, writer._batches.pid, lost, after
        finally:
            await writer.stop()

    first, second, lost, after = run_async(scenario())
    assert second not in (None, first)
    # the batch in flight when the process died: outcome unknown -> UNAVAILABLE
    assert isinstance(lost[0], StoreUnavailable)
    assert after[0].outcome.result is CheckResult.OK
    assert_consistent(store)


def test_the_writer_process_refuses_a_test_clock():
    with pytest.raises(ValueError, match="system clock"):
        ProcessBatches("sqlite://", None, lambda: None, 3, "json")


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
        writer = await started(store, keys)
        batches = writer._batches
        real_start, starts = batches._start_child, []

        async def start_fails_once():
            starts.append(1)
            if len(starts) == 1:
                raise RuntimeError("cannot start a process")
            await real_start()

        batches._start_child = start_fails_once
        try:
            await gather(writer, enroll("card-r"))
            os.kill(batches.pid, signal.SIGKILL)
            died = await gather(writer, verify("card-r", USER, WRONG[USER]))  # the restart fails
            no_writer = await gather(writer, verify("card-r", USER, WRONG[USER]))  # restarted here
            after = await gather(writer, verify("card-r", USER, CORRECT[USER]))
            return died, no_writer, after, len(starts)
        finally:
            await writer.stop()

    died, no_writer, after, starts = run_async(scenario())
    assert isinstance(died[0], StoreUnavailable) and isinstance(no_writer[0], StoreUnavailable)
    assert starts == 2
    assert after[0].outcome.result is CheckResult.OK
    assert [e.event_type for e in store.stream("card-r")] == ["CardEnrolled", "PinVerified"]
