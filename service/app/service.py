"""The application facade the adapters call: commands go through the group
commit writer; reads go to a small thread pool."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from service.app.answers import Answer
from service.app.handler import Caller
from service.app.writer import GroupCommitWriter
from service.clock import Clock, system_clock
from service.domain.card_ids import validate_card_id
from service.domain.commands import Command
from service.domain.errors import NotFound
from service.domain.state import CardState
from service.keys import KeyRing
from service.store.event_store import EventStore, StoreUnavailable, is_unavailable


class PinLife:
    def __init__(self, store: EventStore, keys: KeyRing, clock: Clock = system_clock, *, batch_max: int = 256):
        self.store = store
        self.writer = GroupCommitWriter(store, keys, clock, max_batch=batch_max)
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="pinlife-reader")

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()
        self._readers.shutdown(wait=True)

    async def execute(self, cmd: Command, caller: Caller) -> Answer:
        return await self.writer.submit(cmd, caller)

    async def card_status(self, card_id: str) -> CardState:
        """Costs no try and records nothing."""
        validate_card_id(card_id)
        try:
            state = await asyncio.get_running_loop().run_in_executor(self._readers, self.store.read_card, card_id)
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailable("the database is unavailable") from exc
            raise
        if state is None:
            raise NotFound(f"card {card_id} is not enrolled")
        return state
