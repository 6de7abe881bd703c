"""Group commit: every command waiting is taken into one batch, handled in
one transaction by a runner, committed once, and only then is each caller
answered. Answers are durable before they are sent while the commit (fsync,
round trips) is paid once per batch (figures: docs/performance.md).

Where a batch runs is the runner's business: one writer thread of this
process (`ThreadRunner`, service/app/batch.py), or a writer process
(`ProcessRunner`, service/app/writer_process.py, the server's default).
Both call the same batch function (batch.run_batch).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog

from service.app.batch import Item, Result
from service.app.handlers import Caller

log = structlog.get_logger()


class Runner(Protocol):
    async def start(self) -> None: ...

    async def run(self, items: list[Item]) -> list[Result]: ...

    async def alive(self) -> bool: ...

    async def stop(self) -> None: ...


class GroupCommitWriter:
    """The queue that forms batches and hands them to its runner."""

    def __init__(self, runner: Runner, *, max_batch: int = 256):
        self.runner = runner
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # -- asyncio side ------------------------------------------------------
    async def start(self) -> None:
        await self.runner.start()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="pinlife-writer")

    async def stop(self) -> None:
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        await self.runner.stop()

    async def alive(self) -> bool:
        """Whether the writer can take commands (a writer process that died cannot)."""
        return await self.runner.alive()

    async def submit(self, cmd: Any, caller: Caller) -> Any:
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
                results = await self.runner.run([(c, k) for c, k, _ in batch])
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
