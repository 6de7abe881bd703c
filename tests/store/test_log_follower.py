"""A subscriber following the global log by position never misses an event
and never sees one twice, while several writers append concurrently
(DESIGN.md §4, the gap problem of sequences)."""

from __future__ import annotations

import threading
import time

from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.store.event_store import EventStore
from tests.keys import INTEGRITY
from tests.store.helpers import ALL_TYPES, CORRECT, WRONG, enroll, run_ok, verify

WRITERS = 4
BATCHES = 15
CARDS = [f"card-{i}" for i in range(6)]


def test_a_follower_sees_every_position_once(db_url, keys, clock):
    setup = EventStore(db_url)
    follower = EventStore(db_url)
    stores = [EventStore(db_url) for _ in range(WRITERS)]
    try:
        run_ok(ThreadRunner(setup, keys, clock), *[enroll(c) for c in CARDS])
        errors: list[BaseException] = []
        start = threading.Barrier(WRITERS + 1)

        def write(i: int) -> None:
            try:
                w = ThreadRunner(stores[i], keys, clock)
                caller = Caller("counter", f"terminal-{i}")
                start.wait(timeout=30)
                for n in range(BATCHES):
                    batch = []
                    for k in range(1 + (n + i) % 3):
                        card = CARDS[(i + n + k) % len(CARDS)]
                        t = ALL_TYPES[(n + k) % len(ALL_TYPES)]
                        pin = CORRECT[t] if (n + k + i) % 4 == 0 else WRONG[t]
                        batch.append((verify(card, t, pin), caller))
                    results = w.process(batch)
                    errors.extend(r for r in results if isinstance(r, BaseException))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()

        seen: list[int] = []
        cursor, reads_while_writing = 0, 0
        start.wait(timeout=30)
        writers_done, deadline = False, None
        while True:
            if not writers_done and not any(t.is_alive() for t in threads):
                writers_done, deadline = True, time.monotonic() + 10
            page = follower.log.read_all(cursor, limit=7)
            if page:
                reads_while_writing += not writers_done
                seen += [e.position for e in page]
                cursor = page[-1].position
            elif writers_done and (cursor == follower.log.head_position() or time.monotonic() > deadline):
                break  # caught up, or stuck before a position that never appears
            else:
                time.sleep(0.0005)  # do not starve the writers of the GIL
        for t in threads:
            t.join()

        assert not errors, errors[:3]
        head = follower.log.head_position()
        assert head > len(CARDS) + WRITERS * BATCHES  # every command appended at least one event
        assert seen == list(range(1, head + 1))
        assert reads_while_writing > 1  # the follower really read while the writers appended
        assert follower.cards.projection() == follower.cards.rebuild()
        assert follower.integrity.first_broken_link(INTEGRITY) is None
    finally:
        for s in [setup, follower, *stores]:
            s.close()
