"""How a watcher of the log (AuditService.WatchEvents) learns that the log
may have grown, without polling the store in a tight loop.

Three sources wake it, any of which is enough:

- this instance's writer, after each batch it ran (GroupCommitWriter.after_batch);
- on PostgreSQL, a LISTEN on `pinlife_log`, which the events table's trigger
  notifies on each commit of any instance (service/store/pg_listener.py);
- a fallback poll (POLL_S), for writers this instance cannot hear: another
  process on a SQLite file, or a LISTEN connection that is reconnecting.

A wake-up is only a hint: the watcher always reads the log from the last
position it delivered. Positions are gap-free and commit in order
(service/store/unit_of_work.py), so reading "after p" never skips one.
"""

from __future__ import annotations

import asyncio

POLL_S = 1.0


class LogSignal:
    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None
        self.closed = False

    def ticket(self) -> asyncio.Future[None]:
        """Take before reading the log; `wait(ticket)` then returns at once if
        anything was signalled since, so no signal falls between the read
        and the wait."""
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    def notify(self) -> None:
        """The log may have grown (called on the event loop)."""
        if self._next is not None and not self._next.done():
            self._next.set_result(None)

    def close(self) -> None:
        """The server is stopping: wake every watcher for good."""
        self.closed = True
        self.notify()

    async def wait(self, ticket: asyncio.Future[None], timeout: float = POLL_S) -> None:
        if not ticket.done():
            await asyncio.wait({ticket}, timeout=timeout)
