"""One reader of the log per instance, for every live watcher
(AuditService.WatchEvents): however many watch, each batch the writers
commit is read once and handed to each watcher's bounded buffer.

At the live edge the follower reads at most every INTERVAL (0.1 s), so
that a page gathers what commits meanwhile: each watcher is sent one message
per page, whatever the writers' batch rate. A watcher first catches up on its own, reading the stored events after its
position up to the follower's position when it subscribed (`start`), then
takes what the follower hands it. A watcher whose buffer is full when the
follower has more for it (it falls behind by more than `buffer` pages) is
cut: it is given what its buffer holds, then ends, and watches again from
the last position it delivered; the others never wait for it. The follower
runs while anyone watches, and ends every watch when the server stops or
the log cannot be read (UNAVAILABLE: watch again, here or elsewhere).

Positions are gap-free and commit in order (service/store/unit_of_work.py),
so reading "after p" never skips an event, and a watcher drops what it has
delivered already: it never repeats one either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from ..domain.log import LoggedEvent
from .log_signal import LogSignal

log = structlog.get_logger()

PAGE = 500  # events read at a time, by the follower and by a watcher catching up
BUFFER = 64  # pages a watcher may fall behind the follower before it is cut
INTERVAL = 0.1  # seconds between the follower's reads at the live edge: what commits meanwhile goes in one page
# Why the follower ends every watch (Subscription.ended).
STOPPING = "the server is stopping: watch again after the last position received"
UNREADABLE = "the log cannot be read now: watch again after the last position received"


class Subscription:
    """A watcher's place at the follower: its buffer, and why it ended, if it did."""

    def __init__(self, start: int, buffer: int):
        self.start = start  # the follower hands over what comes after this position
        self.queue: asyncio.Queue[list[LoggedEvent] | None] = asyncio.Queue(maxsize=buffer)
        self.cut = False  # fell behind: it ends once its buffer is delivered
        self.ended: str | None = None  # why the follower ended it (None in the queue says so)


class LogFollower:
    def __init__(
        self,
        read_after: Callable[[int, int], Awaitable[list[LoggedEvent]]],
        head: Callable[[], Awaitable[int]],
        signal: LogSignal,
        *,
        page: int = PAGE,
        buffer: int = BUFFER,
        interval: float = INTERVAL,
    ):
        self._read_after, self._head, self.signal = read_after, head, signal
        self.page, self.buffer, self.interval = page, buffer, interval
        self.position = 0  # the last position handed over
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self) -> Subscription:
        async with self._starting:
            if self._task is None:
                self.position = await self._head()
                self._task = asyncio.create_task(self._run(), name="pinlife-log-follower")
            sub = Subscription(self.position, self.buffer)
            self._subscribers.add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def stop(self) -> None:
        """The server is stopping (its signal is closed): end the follower now,
        not at some later turn of a loop that may be closing, so no task is
        left pending. Every watch ends as `_run` says (STOPPING)."""
        if (task := self._task) is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        why = STOPPING
        try:
            loop = asyncio.get_running_loop()
            while self._subscribers and not self.signal.closed:
                ticket = self.signal.ticket()
                read_at = loop.time()
                events = await self._read_after(self.position, self.page)
                if events:
                    self.position = events[-1].position
                    self._hand_over(events)
                if len(events) < self.page:
                    await self.signal.wait(ticket)
                    # One read per interval at most: each watcher is sent a message per page,
                    # so a page gathering what commits meanwhile costs every watcher less.
                    if (rest := self.interval - (loop.time() - read_at)) > 0 and not self.signal.closed:
                        await asyncio.sleep(rest)
        except Exception as exc:  # noqa: BLE001 - every watch ends UNAVAILABLE; watchers resume
            log.warning("log_follower_failed", error=type(exc).__name__)
            why = UNREADABLE
        finally:
            self._task = None
            for sub in list(self._subscribers):
                self._end(sub, why)

    def _hand_over(self, events: list[LoggedEvent]) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(events)
            except asyncio.QueueFull:
                sub.cut = True
                self._subscribers.discard(sub)

    def _end(self, sub: Subscription, why: str) -> None:
        self._subscribers.discard(sub)
        sub.ended = why
        try:
            sub.queue.put_nowait(None)
        except asyncio.QueueFull:
            sub.cut = True  # it learns once it has delivered its buffer
