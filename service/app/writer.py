"""Group commit: one writer thread takes every command that is waiting,
handles them in one transaction, commits once, and only then answers each.

A bare Python gRPC server does about 3,000 calls/s on a 2-core machine; one
commit per request would cap verify far below that. Batching the appends of
concurrent requests keeps each answer durable before it is sent while paying
the commit (fsync, round trips) once per batch.

Where a batch runs: on one writer thread of this process (`ThreadBatches`),
or in a writer process (`ProcessBatches`, service/app/writer_process.py, the
server's default), whose Python work then uses another core instead of
competing with the gRPC event loop for this process's GIL.

Failures are contained: a conflict with another instance retries the batch;
an unexpected error splits the batch so only the command that caused it
fails; a domain error (not found, already exists, ...) fails only its own
command and writes nothing for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import structlog

from service.app.answers import Answer
from service.app.handler import Caller, ReadCard, execute
from service.app.writer_process import ProcessBatches
from service.clock import Clock
from service.domain.commands import Command
from service.domain.errors import DomainError
from service.keys import KeyRing
from service.store.event_store import EventStore, StoreUnavailable, is_retryable, is_unavailable

log = structlog.get_logger()

Item = tuple[Command, Caller]
Result = Answer | BaseException


class ThreadBatches:
    """Batches run on one writer thread of this process."""

    def __init__(self, writer: GroupCommitWriter):
        self._writer = writer
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pinlife-writer")

    async def start(self) -> None:
        pass

    async def ensure_running(self) -> bool:
        return True  # a thread of this process: it runs while the process does

    async def run(self, items: list[Item]) -> list[Result]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._writer.process, items)

    async def stop(self) -> None:
        self._executor.shutdown(wait=True)


class GroupCommitWriter:
    def __init__(
        self,
        store: EventStore,
        keys: KeyRing,
        clock: Clock,
        *,
        max_batch: int = 256,
        attempts: int = 6,
        separate_process: bool = False,
        log_format: str = "json",
    ):
        self.store = store
        self.keys = keys
        self.clock = clock
        self.max_batch = max_batch
        self.attempts = attempts
        if separate_process:
            self._batches: ThreadBatches | ProcessBatches = ProcessBatches(store.url, keys, clock, attempts, log_format)
        else:
            self._batches = ThreadBatches(self)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # -- asyncio side ------------------------------------------------------
    async def start(self) -> None:
        await self._batches.start()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="pinlife-writer")

    async def stop(self) -> None:
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        await self._batches.stop()

    async def ensure_running(self) -> bool:
        """Whether the writer can take commands (a writer process that died
        between batches, or could not be restarted, is started again)."""
        return await self._batches.ensure_running()

    async def submit(self, cmd: Command, caller: Caller) -> Answer:
        """Resolves once the command's transaction has committed."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((cmd, caller, fut))
        # A cancelled caller (deadline) cancels only this future: the command
        # stays in its batch and is written; _run skips the cancelled future.
        # A retry with the same request id gets the committed answer.
        return await fut

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                results = await self._batches.run([(c, k) for c, k, _ in batch])
            except Exception as exc:  # noqa: BLE001 - never leave a caller waiting
                log.error("batch_failed", error=type(exc).__name__, exc_info=True)
                results = [exc] * len(batch)
            for (_, _, fut), result in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    # -- writer thread -----------------------------------------------------
    def process(self, items: Sequence[Item]) -> list[Result]:
        """Handle a batch in one transaction; one result per item, in order."""
        for attempt in range(1, self.attempts + 1):
            try:
                return self._transaction(items)
            except Exception as exc:  # noqa: BLE001 - classified below
                if is_unavailable(exc):
                    log.warning("store_unavailable", error=type(exc).__name__)
                    return [StoreUnavailable("the database is unavailable")] * len(items)
                if is_retryable(exc) and attempt < self.attempts:
                    time.sleep(random.uniform(0, 0.005 * 2**attempt))
                    continue
                if len(items) > 1:
                    return [self.process([item])[0] for item in items]
                log.error("command_failed", command=type(items[0][0]).__name__, error=type(exc).__name__, attempt=attempt)
                return [exc]
        raise AssertionError("unreachable")

    def _transaction(self, items: Sequence[Item]) -> list[Result]:
        now = self.clock()
        results: list[Result] = []
        with self.store.unit_of_work() as uow:
            card_commands = [(cmd, caller) for cmd, caller in items if hasattr(cmd, "card_id")]
            uow.prefetch(
                [cmd.card_id for cmd, _ in card_commands],
                [(caller.terminal_id, cmd.request_id) for cmd, caller in card_commands if not isinstance(cmd, ReadCard)],
            )
            for cmd, caller in items:
                try:
                    results.append(execute(uow, cmd, caller, self.keys, now))
                except DomainError as exc:
                    results.append(exc)
        return results
