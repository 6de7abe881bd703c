"""Background work of a running server, off the request path: prune the
answers kept past the replay window, every PRUNE_EVERY seconds. (Checkpoints
are signed by the process that writes, on a thread of its own:
checkpoints.CheckpointSigner.)"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from ..runtime.clock import Clock
from .event_store import EventStore

log = structlog.get_logger()

PRUNE_EVERY = 60.0  # seconds
# Answers are kept a little past the replay window, so that a retry near its
# end is refused as reused (not taken for a new request) on every instance.
PRUNE_MARGIN = timedelta(hours=1)


class Maintenance:
    def __init__(self, store: EventStore, clock: Clock, replay_window: timedelta):
        self.store, self.clock, self.replay_window = store, clock, replay_window
        self._task: asyncio.Task[None] | None = None

    def prune(self) -> int:
        pruned = self.store.prune_answers(self.clock() - self.replay_window - PRUNE_MARGIN)
        if pruned:
            log.info("answers_pruned", count=pruned)
        return pruned

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.prune)
            except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
                log.error("maintenance_failed", job="prune", error=type(exc).__name__, detail=str(exc))
            await asyncio.sleep(PRUNE_EVERY)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pinlife-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
