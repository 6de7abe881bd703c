"""Group commit: every command waiting is taken into one batch, handled in
one transaction by a runner, committed once, and only then is each caller
answered. Answers are durable before they are sent while the commit (fsync,
round trips) is paid once per batch (figures: docs/performance.md).

Where a batch runs is the runner's business: one writer thread of this
process (`ThreadRunner`, service/app/batch.py), or a writer process
(`ProcessRunner`, service/app/writer_process.py, the server's default).
Both call the same batch function (batch.run_batch).

A batch has a deadline (`BATCH_DEADLINE`): a database path that hangs
(packets held, not refused: a stopped or overloaded server, a proxy or
firewall that stops forwarding while the kernel still acknowledges) must not
hold callers until their own deadlines. See `GroupCommitWriter`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ..domain.errors import DomainError
from .batch import Item, Result
from .handlers import Caller
from .ports import IntegrityViolation, StoreUnavailable

if TYPE_CHECKING:  # OpenTelemetry is loaded only with tracing on
    from opentelemetry.context import Context

    from ..runtime.tracing import Tracing

log = structlog.get_logger()

Queued = tuple[Any, Caller, "asyncio.Future[Any]"]  # a command, its caller, and the future its caller awaits

# Seconds a batch may take, from the moment it is handed to its runner, before
# its callers are told UNAVAILABLE and the writer counts as stalled. About 30
# times the p99 of a whole verify at the measured ceiling (docs/performance.md:
# ~70 ms), so a busy store is not mistaken for a stalled one; short enough
# that a caller with a typical 5-10 s deadline can still retry elsewhere.
BATCH_DEADLINE = 2.0

STALLED_BATCH = "the database did not answer within {deadline:g} s; the outcome is unknown: retry with the same request id"
NOT_ANSWERING = "the database is not answering; nothing was written: retry"
WRITER_STOPPED = "the writer stopped; the outcome is unknown: retry with the same request id"
# Results that are answers (decided, or the database unreachable, which health
# learns by its own ping): anything else failing a whole batch is a write failure.
ANSWERED = (DomainError, StoreUnavailable, IntegrityViolation)


class Runner(Protocol):
    """Where batches run. A runner that also has `commits` (a list of
    (began, ended) wall-clock nanoseconds) tells the last batch's commits
    (service/app/batch.py); tracing makes their spans from it."""

    async def start(self) -> None: ...

    async def run(self, items: list[Item]) -> list[Result]: ...

    async def alive(self) -> bool: ...

    async def stop(self) -> None: ...


class GroupCommitWriter:
    """The queue that forms batches and hands them to its runner.

    Fail-fast on a hung store: a batch that has not come back from its runner
    within `batch_deadline` seconds is *stalled*:

    - its callers are answered `StoreUnavailable` (UNAVAILABLE): the outcome
      is unknown, as for a writer process that died. The batch is not
      cancelled (a runner cannot take back what it has sent to the database);
      it may still commit. A retry with the same request id gets the
      committed answer (handlers replay a kept answer), or runs the command
      if it did not commit; a status read simply asks again.
    - the commands queued behind it, and every command submitted while it is
      outstanding, fail `StoreUnavailable` at once ("nothing was written"):
      nothing queues up behind a batch that may never return.
    - `alive()` is False, so the server's health loop (which polls it every
      second through PinLife.can_write) reports NOT_SERVING.

    When the stalled batch finally comes back (the database path resumed, or
    the connection failed: TCP user timeout, keepalives, the server's own
    timeouts, see service/store/engine.py), its late results are dropped (its
    callers have been answered already), the stall clears, `alive()` follows
    the runner again and batches flow. One batch runs at a time, so a caller
    is answered within `batch_deadline` of its batch being handed over, which
    is at most `2 * batch_deadline` after it submitted (it may have waited
    for the batch before it, itself bounded). `batch_deadline=None` turns the
    deadline off (tools).
    """

    def __init__(self, runner: Runner, *, max_batch: int = 256, batch_deadline: float | None = BATCH_DEADLINE):
        if batch_deadline is not None and batch_deadline <= 0:
            raise ValueError("the batch deadline must be positive (or None: no deadline)")
        self.runner = runner
        self.max_batch = max_batch
        self.batch_deadline = batch_deadline
        self._queue: asyncio.Queue[Queued | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._stalled_since: float | None = None  # loop time the stalled batch was handed over
        self._stall_signal = asyncio.Event()  # set while a batch is stalled (stop() does not wait for it)
        self._deadline: asyncio.Handle | None = None  # the batch in flight's deadline (_handle)
        # Called after each batch came back (committed or not): the log may
        # have grown (watchers of the log, service/app/log_signal.py).
        self.after_batch: list[Callable[[], None]] = []
        # Observers (metrics): each committed batch's (command, caller) pairs,
        # results and seconds from hand-off to commit; each stall.
        self.on_batch: list[Callable[[list[Item], list[Result], float], None]] = []
        self.on_stall: list[Callable[[], None]] = []
        # Tracing (service/runtime/tracing.py), when on: each command's trace
        # context is kept with it (by its future) from submit to its batch,
        # whose spans are made in each command's trace once it came back.
        self.tracing: Tracing | None = None
        self._traces: dict[asyncio.Future[Any], Context] = {}
        # Every command of a batch failed for a reason that is not a decided
        # answer (a full disk, a read-only database ...): health asks the
        # store for a write that changes nothing until one commits again
        # (service/bootstrap/serving.py), and clears it then. A batch that
        # succeeds does not: a status read succeeds on a read-only database.
        self.writes_failing = False

    # -- asyncio side ------------------------------------------------------
    async def start(self) -> None:
        await self.runner.start()
        self._queue = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="pinlife-writer")

    async def stop(self) -> None:
        """Finish the batches queued (drain), then stop the runner. A stalled
        batch is not waited for here: its callers have been answered."""
        try:
            if self._task is not None:
                queue, stopping = self._started()
                stopping.set()
                await queue.put(None)
                task = self._task
                stall = asyncio.ensure_future(self._stall_signal.wait())
                try:
                    await asyncio.wait({task, stall}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stall.cancel()
                self._task = None
                if task.done():
                    if not task.cancelled():
                        task.result()  # a failure of the writer's own loop is raised here
                else:
                    stalled_s = asyncio.get_running_loop().time() - (self._stalled_since or 0.0)
                    log.warning("writer_stopping_with_a_stalled_batch", stalled_s=round(stalled_s, 3))
                    task.add_done_callback(_discard)  # whatever it ends in, nobody waits for it
        finally:
            await self.runner.stop()

    def _started(self) -> tuple[asyncio.Queue[Queued | None], asyncio.Event]:
        """The queue and the stop signal, which start() makes."""
        if self._queue is None or self._stopping is None:
            raise RuntimeError("the writer is not started")
        return self._queue, self._stopping

    @property
    def stalled(self) -> bool:
        """Whether a batch is outstanding past its deadline."""
        return self._stalled_since is not None

    async def alive(self) -> bool:
        """Whether the writer can take commands: not while a batch is stalled
        (a hung database path), nor once a writer process has died."""
        if self.stalled:
            return False
        return await self.runner.alive()

    async def submit(self, cmd: Any, caller: Caller) -> Any:
        """Resolves once the command's transaction has committed; raises
        StoreUnavailable at once while a batch is stalled."""
        if self.stalled:
            raise StoreUnavailable(NOT_ANSWERING)
        queue, _ = self._started()
        fut = asyncio.get_running_loop().create_future()
        if self.tracing is not None:
            self._traces[fut] = self.tracing.current()
        queue.put_nowait((cmd, caller, fut))
        # A cancelled caller (deadline) cancels only this future: the command
        # stays in its batch and is written; _run skips the cancelled future.
        # A retry with the same request id gets the committed answer.
        return await fut

    async def _run(self) -> None:
        queue, _ = self._started()
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            if not await self._handle(batch):
                break

    async def _handle(self, batch: list[Queued]) -> bool:
        """Run one batch and answer its callers; False if the writer stops
        meanwhile. The runner is awaited in this task, not in one of its own:
        a task would start, and wake this one, a turn of the event loop later
        each time, and a busy loop's turn is a large part of a batch's time
        (docs/performance.md). The deadline is a timer (_stall)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        items = [(c, k) for c, k, _ in batch]
        tracing = self.tracing
        contexts = [self._traces.pop(fut, None) for _, _, fut in batch] if tracing is not None else []
        handed_ns = time.time_ns() if tracing is not None else 0
        failed: Exception | None = None
        if self.batch_deadline is not None:
            self._deadline = loop.call_later(self.batch_deadline, self._stall_after_a_turn, batch, started)
        try:
            results = await self.runner.run(items)
        except Exception as exc:  # noqa: BLE001 - never leave a caller waiting
            log.error("batch_failed", error=type(exc).__name__, exc_info=exc)
            results = [exc] * len(batch)
            failed = exc
        except BaseException:  # cancelled (the loop is ending): the outcome is unknown
            self._answer(batch, [StoreUnavailable(WRITER_STOPPED)] * len(batch))
            raise
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
        if tracing is not None:
            commits = [] if failed is not None else getattr(self.runner, "commits", [])
            _observe(tracing.batch, contexts, handed_ns, time.time_ns(), commits, failed)
        if self._stalled_since is None:
            self._answer(batch, results)
            self._note_failures(results)
            self._batch_done()
            if self.on_batch:
                seconds = loop.time() - started
                for observer in self.on_batch:
                    _observe(observer, items, results, seconds)
            return True
        # It came back after its deadline: its callers were answered by _stall.
        self._stalled_since = None
        self._stall_signal.clear()
        self._batch_done()
        _, stopping = self._started()
        if stopping.is_set():
            return False  # stop() has given up on it
        log.warning(
            "batch_stall_cleared",
            stalled_s=round(loop.time() - started, 3),
            late_results_dropped=len(results),
            store_unavailable=sum(isinstance(r, StoreUnavailable) for r in results),
        )
        return True  # a stop's end marker, if any, is still in the queue

    def _note_failures(self, results: list[Result]) -> None:
        failed = [r for r in results if isinstance(r, BaseException) and not isinstance(r, ANSWERED)]
        if results and len(failed) == len(results):
            if not self.writes_failing:
                log.error("writes_failing", error=type(failed[0]).__name__, commands=len(results))
            self.writes_failing = True

    def _stall_after_a_turn(self, batch: list[Queued], started: float) -> None:
        """At the deadline: a result that came back in this same turn of the
        loop (its caller not woken yet) is answered first."""
        self._deadline = asyncio.get_running_loop().call_soon(self._stall, batch, started)

    def _stall(self, batch: list[Queued], started: float) -> None:
        """The batch in flight passed its deadline: answer its callers and
        the queue now; the batch itself is still awaited by _handle."""
        self._stalled_since = started
        self._stall_signal.set()
        log.error("batch_stalled", deadline_s=self.batch_deadline, commands=len(batch))
        for on_stall in self.on_stall:
            _observe(on_stall)
        for _, _, fut in batch:
            if not fut.done():
                fut.set_exception(StoreUnavailable(STALLED_BATCH.format(deadline=self.batch_deadline)))
        self._fail_queued()

    def _batch_done(self) -> None:
        for listener in self.after_batch:
            _observe(listener)

    def _fail_queued(self) -> None:
        """Fail every command waiting in the queue (not sent: nothing was
        written); a stop's end marker goes back in."""
        queue, _ = self._started()
        stop_marker = False
        while not queue.empty():
            item = queue.get_nowait()
            if item is None:
                stop_marker = True
                continue
            fut = item[2]
            self._traces.pop(fut, None)
            if not fut.done():
                fut.set_exception(StoreUnavailable(NOT_ANSWERING))
        if stop_marker:
            queue.put_nowait(None)

    @staticmethod
    def _answer(batch: list[Queued], results: list[Result]) -> None:
        for (_, _, fut), result in zip(batch, results):
            if fut.done():
                continue  # cancelled by its caller (deadline)
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)


def _observe(observer: Callable[..., None], *args: Any) -> None:
    """An observer's failure is logged, never the writer's."""
    try:
        observer(*args)
    except Exception:  # noqa: BLE001
        log.error("batch_observer_failed", observer=getattr(observer, "__qualname__", repr(observer)), exc_info=True)


def _discard(fut: asyncio.Future[Any]) -> None:
    """Nobody waits for it any more: a failure is logged, not lost."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.error("abandoned_batch_failed", error=type(exc).__name__, exc_info=exc)
