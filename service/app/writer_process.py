"""The writer process: group-commit batches handled in a child process, by
the same batch function as the thread runner (batch.run_batch).

Why: on the verify path the gRPC event loop and the writer each need the
GIL most of the time; in a child process the writer's Python (decide, hash
chain, SQL) runs on another core (measured: docs/performance.md). The batch
is the unit that crosses the process boundary (one pickle each way per
batch, not per request). The service clock and the policy cross once, at
start.

Crash-only: the child is started once. If it dies, the batch in flight
fails UNAVAILABLE (its outcome is unknown: a retry with the same request id
gets the committed answer, or runs the command if it did not commit), every
later batch fails UNAVAILABLE at once ("nothing was written"), health turns
NOT_SERVING, and `on_death` tells the server, which drains and exits non-zero
so that its supervisor starts a fresh one. Durability is unchanged: the
child answers a batch only after it committed, and the server answers each
request only after that.

A batch that does not come back in time (a hung database path) is the
group-commit writer's business (writer.py, BATCH_DEADLINE): its callers are
answered UNAVAILABLE there while this runner keeps waiting for the child,
which is not killed for it (it is not dead, only waiting on its database
connection); when the child answers, the late results are dropped and
batches flow again. A stop with such a batch outstanding does not wait for
it: the child is told to exit after it, and killed if it has not within 10 s.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import cast

import structlog

from ..domain.errors import DomainError
from ..domain.policy import Policy
from ..keys.ring import KeyRing
from ..runtime import child, logs
from ..runtime.clock import ServiceClock
from ..runtime.heap import freeze_startup_objects
from .batch import Item, Result, run_batch
from .ports import IntegrityViolation, StoreFactory, StoreUnavailable

log = structlog.get_logger()


class WriterFailure(Exception):
    """An unexpected error in the writer process (logged there with its
    traceback); it stands in for the original, which may not cross a pipe."""


class ProcessRunner:
    """Batches run in one child process, a fresh interpreter (runtime/child.py;
    a fork of a process that runs gRPC is not safe). A batch goes down a pipe and its
    results come back on the same pipe, read by the event loop itself: no
    helper threads that would also need this process's GIL."""

    def __init__(
        self,
        open_store: StoreFactory,
        keys: KeyRing,
        clock: ServiceClock,
        policy: Policy,
        attempts: int,
        log_format: str,
        *,
        log_level: str = "info",
        start_timeout: float = 20.0,
        on_death: Callable[[], None] = lambda: None,
    ):
        if not isinstance(clock, ServiceClock):
            raise ValueError("the writer process takes a ServiceClock (a test clock needs the thread runner)")
        self._args = (open_store, keys, clock, policy, attempts, log_format, log_level)
        # A child that does not answer its first message in time is killed:
        # a start that hangs must not hold the server's start.
        self.start_timeout = start_timeout
        self.on_death = on_death
        self._proc: child.Child | None = None
        self._conn: Connection | None = None
        self._waiting: asyncio.Future[object] | None = None
        self._lock: asyncio.Lock | None = None  # one batch at a time
        self.dead = False  # the child died; nothing more is sent
        self.pid: int | None = None  # the writer process (operators, tests, its process metrics)
        self.commits: list[tuple[int, int]] = []  # the last batch's, as the child timed them (tracing: writer.py)

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        self._proc, self._conn = child.start(_child_main, self._args)
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._on_readable)
        try:
            ready = await asyncio.wait_for(self._exchange(_READY), self.start_timeout)
        except TimeoutError:
            self._proc.kill()
            raise RuntimeError(f"the writer process did not start within {self.start_timeout} s") from None
        if ready != _READY:
            raise RuntimeError(f"the writer process did not start: {ready}")
        self.pid = self._proc.pid
        log.info("writer_process_started", pid=self.pid)

    async def alive(self) -> bool:
        """Whether the writer process still runs (health)."""
        return not self.dead

    def _died(self, **context: object) -> None:
        if self.dead:
            return
        self.dead = True
        self._disconnect()
        log.error("writer_process_died", pid=self.pid, **context)
        self.on_death()

    def _on_readable(self) -> None:
        if self._conn is None:  # disconnected (its reader is removed with it)
            return
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            message = _DIED
            if self._waiting is None:
                self._died(between_batches=True)
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(message)

    async def _exchange(self, message: object) -> object:
        if self._conn is None:  # disconnected: as a closed pipe
            return _DIED
        self._waiting = asyncio.get_running_loop().create_future()
        try:
            self._conn.send(message)
        except OSError:
            return _DIED
        try:
            return await self._waiting
        finally:
            self._waiting = None

    async def run(self, items: list[Item]) -> list[Result]:
        if self._lock is None:
            raise RuntimeError("the writer process is not started")
        async with self._lock:
            self.commits = []
            if self.dead:
                return [StoreUnavailable("the writer process is gone; nothing was written: retry")] * len(items)
            answer = await self._exchange(items)
            if answer is _ABANDONED:
                unknown = "the server stopped waiting; the outcome is unknown: retry with the same request id"
                return [StoreUnavailable(unknown)] * len(items)
            if answer is not _DIED:
                # what the child sent: one result per item, and its commits' times
                results, self.commits = cast(tuple[list[Result], list[tuple[int, int]]], answer)
                return results
            self._died(during_batch=True, commands=len(items))
            return [StoreUnavailable("the writer stopped; the outcome is unknown: retry with the same request id")] * len(items)

    def _disconnect(self) -> None:
        if self._conn is not None:
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    def _reap(self, timeout: float = 10) -> int | None:
        """Wait for the child to exit (kill it after `timeout`); its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return proc.exitcode

    async def stop(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            # A stalled batch (writer.py answered its callers at its deadline):
            # nobody waits for its results any more.
            self._waiting.set_result(_ABANDONED)
        if self._conn is not None:
            try:
                self._conn.send(None)  # finish and exit
            except OSError:
                pass
            self._disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self._reap)


# -- in the child ------------------------------------------------------------
_READY = "ready"
_DIED = object()
_ABANDONED = object()  # stop() gave up on a stalled batch


def _child_main(
    conn: Connection,
    open_store: StoreFactory,
    keys: KeyRing,
    clock: ServiceClock,
    policy: Policy,
    attempts: int,
    log_format: str,
    log_level: str,
) -> None:
    # Ctrl-C reaches the whole process group, and a supervisor may send
    # SIGTERM to the whole group: the server drains, then stops the writer
    # (or the writer exits when the server's end of the pipe closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(log_format, log_level)
    logs.bind_context(process="writer")
    store, leaves = open_store(keys, clock)
    if leaves is not None:
        leaves.start()  # signs off this process's write path, on a thread of its own
    freeze_startup_objects()
    try:
        while True:
            try:
                items = conn.recv()
            except EOFError:
                return  # the server is gone
            if items is None:
                return
            if items == _READY:
                conn.send(_READY)
                continue
            commits: list[tuple[int, int]] = []
            results = run_batch(store, keys, clock, policy, items, attempts, leaves, commits)
            conn.send(([_portable(result) for result in results], commits))
    finally:
        if leaves is not None:
            leaves.stop()  # the log as this writer leaves it
        store.close()


def _portable(result: Result) -> Result:
    """Answers and the errors a caller is told about cross as they are;
    anything else is logged here, with its traceback, and replaced."""
    if not isinstance(result, BaseException) or isinstance(result, (DomainError, StoreUnavailable, IntegrityViolation)):
        return result
    log.error("command_failed_internal", error=type(result).__name__, exc_info=result)
    return WriterFailure(type(result).__name__)
