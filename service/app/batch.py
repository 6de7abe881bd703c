"""The group-commit transaction: one plain function that handles a batch of
commands in one transaction and returns one result per command, in order.
The thread runner below and the writer process (writer_process.py) both
call it; the queue that forms batches is writer.py.

Failures are contained: a conflict with another instance retries the batch
(the retries lock the terminals' rows the first attempt read unlocked);
an unexpected error splits the batch so only the command that caused it
fails; a domain error (not found, already exists, ...) fails only its own
command, which writes nothing but a refusal its rules record (handlers.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from ..domain.errors import DomainError
from ..domain.policy import Policy
from ..keys.ring import KeyRing
from ..runtime.clock import Clock
from .handlers import HANDLERS, Caller, Deps
from .ports import DATABASE_UNAVAILABLE, LeafSink, Store, StoreUnavailable

log = structlog.get_logger()

Item = tuple[Any, Caller]
Result = Any  # an answer of the command's handler, or the exception it ended in

ATTEMPTS = 6  # of one batch, on conflicts with another instance


def run_batch(
    store: Store,
    keys: KeyRing,
    clock: Clock,
    policy: Policy,
    items: Sequence[Item],
    attempts: int = ATTEMPTS,
    leaves: LeafSink | None = None,
    commits: list[tuple[int, int]] | None = None,
) -> list[Result]:
    """Handle a batch in one transaction; one result per item, in order.
    `leaves` is told the committed events' Merkle leaves; `commits` gets
    each committed transaction's commit, from the end of its commands to
    its COMMIT done (rows written, then COMMIT), in wall-clock nanoseconds
    (time.time_ns: the trace spans' clock, the same in the writer process;
    one transaction, or one per command after a split)."""
    for attempt in range(1, attempts + 1):
        try:
            return _transaction(store, Deps(keys, policy, clock()), items, attempt > 1, leaves, commits)
        except Exception as exc:  # noqa: BLE001 - classified below
            if store.is_unavailable(exc):
                log.warning("store_unavailable", error=type(exc).__name__)
                return [StoreUnavailable(DATABASE_UNAVAILABLE)] * len(items)
            if store.is_retryable(exc) and attempt < attempts:
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
                continue
            if len(items) > 1:
                return [run_batch(store, keys, clock, policy, [item], attempts, leaves, commits)[0] for item in items]
            log.error("command_failed", command=type(items[0][0]).__name__, error=type(exc).__name__, attempt=attempt)
            return [exc]
    raise AssertionError("unreachable")


def _transaction(
    store: Store,
    deps: Deps,
    items: Sequence[Item],
    lock_terminals: bool,
    leaves: LeafSink | None,
    commits: list[tuple[int, int]] | None,
) -> list[Result]:
    handlers = [HANDLERS[type(cmd)] for cmd, _ in items]
    touches = [h.touches(cmd, caller) for h, (cmd, caller) in zip(handlers, items)]
    results: list[Result] = []
    with store.unit_of_work(deps.keys.integrity, lock_terminals=lock_terminals) as uow:
        uow.prefetch(
            [c for t in touches for c in t.write_cards],
            [k for t in touches for k in t.request_keys],
            [c for t in touches for c in t.read_cards],
            [x for t in touches for x in t.terminals],
        )
        for handler, (cmd, caller) in zip(handlers, items):
            try:
                results.append(handler.handle(uow, cmd, caller, deps))
            except DomainError as exc:
                results.append(exc)
        commit_began = time.time_ns()
    if commits is not None:  # committed
        commits.append((commit_began, time.time_ns()))
    if leaves is not None and uow.leaves:  # committed
        leaves.committed(uow.leaves)
    return results


class ThreadRunner:
    """Runs batches on one writer thread of this process."""

    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        clock: Clock,
        policy: Policy = Policy(),
        attempts: int = ATTEMPTS,
        leaves: LeafSink | None = None,
    ):
        self.store = store
        self._args = (store, keys, clock, policy)
        self._attempts = attempts
        self._leaves = leaves
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pinlife-writer")
        self.commits: list[tuple[int, int]] = []  # the last batch's (tracing: writer.py)

    async def start(self) -> None:
        pass

    async def alive(self) -> bool:
        return True  # a thread of this process: it runs while the process does

    def process(self, items: Sequence[Item]) -> list[Result]:
        """One batch, on the calling thread (tests and tools)."""
        self.commits = []
        return run_batch(*self._args, items, self._attempts, self._leaves, self.commits)

    async def run(self, items: list[Item]) -> list[Result]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.process, items)

    async def stop(self) -> None:
        # Off the event loop: a stalled batch may still be running (writer.py).
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
