"""LISTEN pinlife_log on PostgreSQL: a commit by any connection wakes the
listener (the events table's trigger, migration 0006), and a listener whose
connection is killed reconnects and hears the next commit."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from pinlife.store.pg_listener import LogListener
from tests.store.helpers import enroll, run_ok

pytestmark = pytest.mark.postgres
WAIT_S = 20  # a bound on a hung listener, not a measured duration


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_commit_wakes_the_listener_and_a_killed_connection_is_remade(store, writer):
    async def scenario() -> None:
        woken = asyncio.Event()
        listener = LogListener(store.url, woken.set)
        listener.start()
        try:
            await asyncio.wait_for(woken.wait(), WAIT_S)  # the wake-up on (re)connecting
            await asyncio.sleep(0.2)  # LISTEN is in place
            woken.clear()
            await asyncio.to_thread(run_ok, writer, enroll("card-L1"))
            await asyncio.wait_for(woken.wait(), WAIT_S)

            with store.writer.begin() as conn:  # kill the listening connection
                killed = conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN pinlife_log%'")
                ).all()
            assert killed, "no LISTEN connection to kill"
            woken.clear()
            await asyncio.wait_for(woken.wait(), WAIT_S)  # reconnected
            await asyncio.sleep(0.2)
            woken.clear()
            await asyncio.to_thread(run_ok, writer, enroll("card-L2"))
            await asyncio.wait_for(woken.wait(), WAIT_S)
        finally:
            await listener.stop()

    asyncio.run(scenario())
