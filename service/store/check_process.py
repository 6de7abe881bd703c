"""A whole-store integrity check in a process of its own (VerifyIntegrity):
its CPU (keyed links, MACs, the fold, the lawful replay) is not the
server's, so it neither slows the event loop that answers PIN calls nor
holds the server's interpreter lock; its memory is its own and bounded (the
check reads a batch of cards at a time); and it stops at once when its
caller cancels: the process is ended. It runs at a lower priority (nice
10), so that when the cores are busy the PIN path's processes run first,
and works half its time (PACE): nice does not reach the database server,
whose time the check's reads would otherwise take from the writer.

The process is a fresh interpreter (runtime/child.py: a fork of a process
that runs gRPC is not safe); it opens its own store on the database (or the auditors' read
replica) and sends its progress and then its report down a pipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing.connection import Connection

import structlog

from ..app.ports import DATABASE_UNAVAILABLE, StoreUnavailable
from ..domain.integrity import CheckCancelled, Progress, Report
from ..keys.ring import KeyRing
from ..runtime import child
from .check import check_store
from .event_store import EventStore

POLL_S = 0.1  # how often the parent looks for a cancel while it waits
log = structlog.get_logger()

NICENESS = 10  # the check's process runs at a lower priority than the server and its writer
PACE = 0.5  # and works half its time: its database reads leave room for the PIN path's too


class CheckFailed(Exception):
    """The check's process failed (its error, as text: the original may not cross a pipe)."""


def check_store_in_process(
    database_url: str,
    keys: KeyRing,
    supplied: Sequence[str],
    progress: Progress,
    cancelled: Callable[[], bool],
    clock_skew: timedelta,
) -> Report:
    """The report of check.check_store, run in a child process; CheckCancelled
    as soon as `cancelled()` is true (the child is ended)."""
    proc, parent = child.start(_child_main, (database_url, keys, list(supplied), clock_skew))
    try:
        while True:
            if cancelled():
                raise CheckCancelled("the integrity check was cancelled")
            if not parent.poll(POLL_S):
                if not proc.is_alive() and not parent.poll(0):
                    raise CheckFailed(f"the check's process ended ({proc.exitcode}) without a report")
                continue
            try:
                kind, *value = parent.recv()
            except EOFError:
                raise CheckFailed(f"the check's process ended ({proc.exitcode}) without a report") from None
            if kind == "progress":
                progress(*value)
            elif kind == "report":
                report: Report = value[0]
                return report
            elif kind == "unavailable":  # the driver's text to the log, never to the auditor
                log.warning("check_store_unavailable", detail=value[0][:500])
                raise StoreUnavailable(DATABASE_UNAVAILABLE)
            else:
                raise CheckFailed(value[0])
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def _child_main(conn: Connection, database_url: str, keys: KeyRing, supplied: list[str], clock_skew: timedelta) -> None:
    os.nice(NICENESS)  # the PIN path's processes come first when the cores are busy
    store = EventStore(database_url, read_pool=1)
    try:
        report = check_store(
            store,
            keys,
            supplied,
            lambda phase, done, total: conn.send(("progress", phase, done, total)),
            clock_skew=clock_skew,
            pace=PACE,
        )
        conn.send(("report", report))
    except BaseException as exc:  # noqa: BLE001 - told to the parent in one line
        if isinstance(exc, Exception) and store.is_unavailable(exc):
            conn.send(("unavailable", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        store.close()
        conn.close()
