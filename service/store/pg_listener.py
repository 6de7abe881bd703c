"""LISTEN pinlife_log on PostgreSQL: the events table's trigger (migration
0006) notifies the channel once per committing batch, whichever instance
wrote it; each notification calls `on_notify` on the event loop. The
connection is the service's own role (LISTEN needs no privilege), made with
the same keepalives and time-outs as the pools, and re-made after a failure;
while it is down, watchers fall back to polling (service/app/log_signal.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy.engine import make_url

from .engine import postgres_connect_args

log = structlog.get_logger()
CHANNEL = "pinlife_log"
RETRY_S = (0.5, 1.0, 2.0, 5.0)


def _conninfo(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class LogListener:
    def __init__(self, database_url: str, on_notify: Callable[[], None]):
        self._conninfo = _conninfo(database_url)
        self._on_notify = on_notify
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pinlife-log-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failures = 0
        args = postgres_connect_args(writer=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **args) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if failures:
                        log.info("log_listener_reconnected")
                    failures = 0
                    self._on_notify()  # anything committed while not listening
                    async for _ in conn.notifies():
                        self._on_notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: retry, watchers poll meanwhile
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.warning("log_listener_failed", error=type(exc).__name__, detail=str(exc)[:200], retry_s=delay)
                await asyncio.sleep(delay)
