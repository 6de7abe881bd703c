"""The batch deadline (service/app/writer.py) with the writer process
against a real store of each backend: while another connection holds the
write lock, the batch waits on its database (SQLite's busy timeout,
PostgreSQL's lock), its caller is told UNAVAILABLE at the deadline, new
commands are refused at once, and the writer reports not alive; once the
lock goes the late batch commits, the writer serves again, and a retry with
the same request id gets the committed answer. A stop does not wait for a
stalled batch."""

from __future__ import annotations

import asyncio
import contextlib

from pinlife.app.ports import StoreUnavailable
from pinlife.app.writer import GroupCommitWriter
from pinlife.app.writer_process import ProcessRunner
from pinlife.bootstrap.writer_store import WriterStore
from pinlife.domain.outcomes import CheckResult
from pinlife.domain.policy import Policy
from pinlife.runtime.clock import system_clock
from tests.store.helpers import CORRECT, COUNTER, USER, WRONG, assert_consistent, enroll, rid, verify
from tests.store.test_writer_process import until, write_lock_held

DEADLINE = 0.3  # s: short, for the test; the server's is BATCH_DEADLINE


@contextlib.asynccontextmanager
async def process_writer(store, keys):
    writer = GroupCommitWriter(
        ProcessRunner(WriterStore(store.url), keys, system_clock, Policy(), 3, "json"), batch_deadline=DEADLINE
    )
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


async def outcome(writer, command):
    try:
        return await writer.submit(command, COUNTER)
    except StoreUnavailable as exc:
        return exc


def test_a_batch_waiting_on_its_database_past_the_deadline_fails_unavailable_and_the_writer_recovers(store, keys):
    async def scenario():
        async with process_writer(store, keys) as writer:
            await writer.submit(enroll("card-st"), COUNTER)
            same_id = rid()
            with write_lock_held(store):
                stuck = await outcome(writer, verify("card-st", USER, WRONG[USER], same_id))
                stalled_alive = await writer.alive()
                refused = await outcome(writer, verify("card-st", USER, CORRECT[USER]))
            await until(lambda: not writer.stalled)
            retry = await writer.submit(verify("card-st", USER, WRONG[USER], same_id), COUNTER)
            return stuck, stalled_alive, refused, await writer.alive(), retry

    stuck, stalled_alive, refused, alive, retry = asyncio.run(scenario())
    assert isinstance(stuck, StoreUnavailable) and "outcome is unknown" in str(stuck)
    assert isinstance(refused, StoreUnavailable) and "nothing was written" in str(refused)
    assert not stalled_alive and alive
    # the stalled batch committed late; its retry replays that answer
    assert retry.replayed and (retry.outcome.result, retry.outcome.remaining_tries) == (CheckResult.WRONG_PIN, 2)
    assert [e.event_type for e in store.log.stream("card-st")] == ["CardEnrolled", "PinVerificationFailed"]
    assert_consistent(store)


def test_a_stop_does_not_wait_for_a_stalled_batch(store, keys):
    async def scenario():
        writer = GroupCommitWriter(
            ProcessRunner(WriterStore(store.url), keys, system_clock, Policy(), 3, "json"), batch_deadline=DEADLINE
        )
        await writer.start()
        await writer.submit(enroll("card-sp"), COUNTER)
        with write_lock_held(store):
            stuck = await outcome(writer, verify("card-sp", USER, WRONG[USER]))
            stopping = asyncio.ensure_future(writer.stop())
            await asyncio.sleep(0.2)
        await asyncio.wait_for(stopping, 10)
        return stuck, writer.runner

    stuck, runner = asyncio.run(scenario())
    assert isinstance(stuck, StoreUnavailable)
    assert runner._proc is None  # the writer process was reaped
    assert_consistent(store)
