"""Watchers of the log (service/app/log_follower.py, service/app/audit.py):
one reader per instance fans each page out; a watcher that falls behind is
cut with a resumable position; watchers are capped; a watch catches up on
the stored events, then follows, never skipping or repeating a position."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from pinlife.app.audit import Audit
from pinlife.app.handlers import Caller
from pinlife.app.log_follower import LogFollower
from pinlife.app.log_signal import LogSignal
from pinlife.app.ports import StoreUnavailable
from pinlife.bootstrap.instance import make_app
from pinlife.domain.errors import AtCapacity
from pinlife.domain.policy import Policy
from pinlife.domain.streams import terminal_stream
from tests.clock import FakeClock
from tests.keys import INTEGRITY, ring
from tests.unit.fakes import FakeStore

KEYS = ring("k-1", {"k-1": b"k" * 32})


@dataclass(frozen=True)
class Ev:
    position: int


class Log:
    """A log the test appends to, and counts the reads of."""

    def __init__(self, size: int = 0):
        self.events = [Ev(p) for p in range(1, size + 1)]
        self.reads = 0
        self.signal = LogSignal()

    def append(self, n: int) -> None:
        last = self.events[-1].position if self.events else 0
        self.events += [Ev(p) for p in range(last + 1, last + n + 1)]
        self.signal.notify()

    async def read_after(self, after: int, limit: int) -> list:
        self.reads += 1
        return [e for e in self.events if e.position > after][:limit]

    async def head(self) -> int:
        return self.events[-1].position if self.events else 0

    # as AuditReads, for Audit.watch
    def read_all(self, after: int, limit: int) -> list:
        return [e for e in self.events if e.position > after][:limit]

    def head_position(self) -> int:
        return self.events[-1].position if self.events else 0


async def until(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


def test_every_watcher_gets_each_page_and_the_log_is_read_once_for_all():
    async def main() -> None:
        log = Log()
        follower = LogFollower(log.read_after, log.head, log.signal, page=10)
        subs = [await follower.subscribe() for _ in range(5)]
        await until(lambda: log.reads >= 1)
        reads = log.reads
        log.append(7)
        for sub in subs:
            assert [e.position for e in await asyncio.wait_for(sub.queue.get(), 5)] == list(range(1, 8))
        assert log.reads - reads <= 2  # one read for the page, whoever watches (and maybe the poll's empty one)
        for sub in subs:
            follower.unsubscribe(sub)
        log.signal.close()

    asyncio.run(main())


def test_a_watcher_that_falls_behind_is_cut_and_the_others_go_on():
    async def main() -> None:
        log = Log()
        follower = LogFollower(log.read_after, log.head, log.signal, page=1, buffer=2)
        slow, fast = await follower.subscribe(), await follower.subscribe()
        got = []
        for _ in range(4):
            log.append(1)
            got.append((await asyncio.wait_for(fast.queue.get(), 5))[0].position)
        assert got == [1, 2, 3, 4]
        assert slow.cut and slow.queue.qsize() == 2  # it keeps what its buffer holds, and ends after it
        assert follower.watchers == 1
        follower.unsubscribe(fast)
        log.signal.close()

    asyncio.run(main())


def watch_scenario(scenario, *, max_watchers: int = 64, per_terminal: int = 4) -> FakeStore:
    store = FakeStore()

    async def main() -> None:
        app = make_app(store, KEYS, FakeClock(datetime(2026, 12, 1, tzinfo=UTC)), Policy(), writer="thread")
        await app.start()
        try:
            await scenario(
                app,
                lambda reads, signal: Audit(
                    reads,
                    app,
                    INTEGRITY,
                    lambda exc: False,
                    signal,
                    max_watchers=max_watchers,
                    max_watchers_per_terminal=per_terminal,
                ),
            )
        finally:
            await app.stop()

    asyncio.run(main())
    return store


def test_a_watch_catches_up_then_follows_without_a_gap_or_a_repeat_and_records_what_it_delivered():
    auditor = Caller("auditor", "audit-01")

    async def scenario(app, make) -> None:
        log = Log(1203)  # stored before the watch: caught up in pages
        audit = make(log, log.signal)
        watch = audit.watch(auditor, 3)
        seen: list[int] = []
        while len(seen) < 1200:
            seen += [e.position for e in await anext(watch)]
        log.append(5)  # committed while it follows
        while len(seen) < 1205:
            seen += [e.position for e in await anext(watch)]
        assert seen == list(range(4, 1209))
        await watch.aclose()
        await until(lambda: not audit._pending)

    store = watch_scenario(scenario)
    records = [(json.loads(e.event.filter), e.event.events_returned) for e in store.log.stream(terminal_stream("audit-01"))]
    assert records == [({"after_position": 3}, 0), ({"after_position": 3, "ended": "watch"}, 1205)]


def test_watchers_are_capped_per_terminal_and_per_instance():
    a, b = Caller("auditor", "audit-a"), Caller("auditor", "audit-b")

    async def scenario(app, make) -> None:
        log = Log(3)
        audit = make(log, log.signal)
        first, second = audit.watch(a, 0), audit.watch(a, 0)
        await anext(first), await anext(second)
        with pytest.raises(AtCapacity):
            await anext(audit.watch(a, 0))  # a third for one terminal
        third = audit.watch(b, 0)
        await anext(third)
        with pytest.raises(AtCapacity):
            await anext(audit.watch(b, 0))  # a fourth on this instance
        await first.aclose()
        fourth = audit.watch(b, 0)  # room again
        await anext(fourth)
        for w in (second, third, fourth):
            await w.aclose()
        log.signal.close()
        await audit.stop()

    watch_scenario(scenario, max_watchers=3, per_terminal=2)


def test_a_watch_that_fell_behind_ends_unavailable_naming_where_to_resume():
    auditor = Caller("auditor", "audit-01")

    async def scenario(app, make) -> None:
        log = Log()
        audit = make(log, log.signal)
        audit.follower.page, audit.follower.buffer = 1, 1
        watch = audit.watch(auditor, 0)
        log.append(1)
        assert [e.position for e in await anext(watch)] == [1]
        log.append(1)  # the watcher does not read meanwhile: its one page of buffer fills ...
        await until(lambda: audit.follower.position == 2)
        log.append(1)  # ... and the next page cuts it
        await until(lambda: audit.follower.watchers == 0)
        assert [e.position for e in await anext(watch)] == [2]  # what its buffer held
        with pytest.raises(StoreUnavailable, match="watch again after position 2"):
            await anext(watch)
        log.signal.close()
        await audit.stop()

    watch_scenario(scenario)
