"""Background work of a running server, off the request path: sign a
checkpoint of the log when no writer has for a while (writers sign every
CHECKPOINT_EVERY seconds while they write: LeafFeed, service/store/
checkpoints.py; this covers an idle log's tail, a new store, and an
instance that does not write), and prune answers past the replay window.
Each instance runs it; instances racing to sign the same tree size store it
once."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta

import structlog

from service.runtime.clock import Clock
from service.keys.ring import KeyRing
from service.store import checkpoints
from service.store.checkpoints import CHECKPOINT_EVERY
from service.store.event_store import EventStore

log = structlog.get_logger()

PRUNE_EVERY = 60.0  # seconds
# Answers are kept a little past the replay window, so that a retry near its
# end is refused as reused (not taken for a new request) on every instance.
PRUNE_MARGIN = timedelta(hours=1)


class Maintenance:
    def __init__(self, store: EventStore, keys: KeyRing, clock: Clock, replay_window: timedelta):
        self.store, self.keys, self.clock, self.replay_window = store, keys, clock, replay_window
        self._task: asyncio.Task | None = None
        self._latest: tuple[int, float] | None = None  # the latest stored checkpoint's size, and since when

    def checkpoint(self, force: bool = False) -> None:
        """Sign one at start, when no checkpoint was stored for two rounds,
        and with force (stopping)."""
        if self.keys.checkpoint is None:
            return
        latest = checkpoints.latest(self.store)
        size, now = (latest.tree_size if latest else 0), time.monotonic()
        if self._latest is not None and not force:
            if size != self._latest[0]:
                self._latest = (size, now)  # a writer signs: nothing to do
                return
            if now - self._latest[1] < 2 * CHECKPOINT_EVERY - 1:
                return
        signed = checkpoints.sign_checkpoint(self.store, self.keys, self.clock())
        self._latest = (signed.tree_size if signed else size, now)

    def prune(self) -> int:
        pruned = self.store.prune_answers(self.clock() - self.replay_window - PRUNE_MARGIN)
        if pruned:
            log.info("answers_pruned", count=pruned)
        return pruned

    async def _run(self, job) -> None:
        try:
            await asyncio.to_thread(job)
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            log.error("maintenance_failed", job=job.__name__, error=type(exc).__name__, detail=str(exc))

    async def _loop(self) -> None:
        prune_rounds = max(1, round(PRUNE_EVERY / CHECKPOINT_EVERY))
        for n in itertools.count():
            await self._run(self.checkpoint)
            if n % prune_rounds == 0:
                await self._run(self.prune)
            await asyncio.sleep(CHECKPOINT_EVERY)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pinlife-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._run(self.final_checkpoint)

    def final_checkpoint(self) -> None:
        """The log as this instance leaves it."""
        self.checkpoint(force=True)
