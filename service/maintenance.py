"""Background work of a running server, off the request path: sign a
checkpoint of the log every few seconds while it grows, and prune answers
past the replay window. Each instance runs it; instances racing to sign
the same tree size store it once (service/store/checkpoints.py)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import structlog

from service.clock import Clock
from service.keys import KeyRing
from service.store import checkpoints
from service.store.event_store import EventStore

log = structlog.get_logger()

CHECKPOINT_EVERY = 10.0  # seconds
PRUNE_EVERY = 60.0  # seconds
# Answers are kept a little past the replay window, so that a retry near its
# end is refused as reused (not taken for a new request) on every instance.
PRUNE_MARGIN = timedelta(hours=1)


class Maintenance:
    def __init__(self, store: EventStore, keys: KeyRing, clock: Clock, replay_window: timedelta):
        self.store, self.keys, self.clock, self.replay_window = store, keys, clock, replay_window
        self._task: asyncio.Task | None = None

    def checkpoint(self) -> None:
        if self.keys.checkpoint is not None:
            checkpoints.sign_checkpoint(self.store, self.keys, self.clock())

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
        await self._run(self.checkpoint)  # the log as this instance leaves it
