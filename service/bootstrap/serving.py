"""An instance behind its gRPC endpoint, started, watched and stopped in
order; and `serve`, which runs one until SIGINT or SIGTERM (`pinlife serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from ..api.server import ListenError, create_server
from ..config.access import AccessConfig
from ..config.settings import Settings
from ..domain.policy import Policy
from ..keys.ring import KeyRing
from ..runtime.clock import Clock, ServiceClock
from ..runtime.heap import freeze_startup_objects
from ..store.engine import reach
from ..store.errors import StoreRefused, StoreUnavailable, diagnose
from .instance import STARTUP_REFUSALS, Instance

if TYPE_CHECKING:  # OpenTelemetry is loaded only with tracing on
    from ..runtime.tracing import Tracing

log = structlog.get_logger()


class Server:
    """One service instance and its gRPC endpoint, bound (not yet started)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyRing,
        clock: Clock | None = None,
        access: AccessConfig | None = None,
        policy: Policy | None = None,
        tracing: Tracing | None = None,
    ):
        self.settings = settings
        self.instance = Instance(settings, keys, clock, access, policy, tracing)
        try:
            self.endpoint = create_server(
                self.instance.app,
                self.instance.audit,
                listen=settings.listen,
                access=access,
                metrics=self.instance.metrics,
                rates=settings.rates(),
                tracing=self.instance.tracing,
            )
        except ListenError:
            self.instance.close()
            raise
        self.port = self.endpoint.port
        self.store = self.instance.store
        self.failed = self.instance.failed
        self._watcher: asyncio.Task | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.instance.metrics_port

    async def _watch_store(self, interval: float) -> None:
        """Health follows the database and the write path: NOT_SERVING while
        the database cannot be reached, or while writes cannot commit (every
        command of a batch failed, and a write that changes nothing fails too:
        a full disk, a read-only database), SERVING again by itself once they
        can; or once the writer process has died (the server is then stopping)."""
        loop = asyncio.get_running_loop()
        serving = True
        ping: asyncio.Future | None = None
        while True:
            try:
                if ping is None or ping.done():  # never more than one ping stuck on a hung path
                    ping = loop.run_in_executor(None, self.store.ping)
                done, _ = await asyncio.wait({ping}, timeout=interval * 2)  # a ping left running is not cancelled
                if not done:
                    raise TimeoutError
                ping.result()
                ok = True
            except Exception as exc:  # noqa: BLE001 - any failure means not serving
                ok = False
                if serving:
                    log.warning("store_unreachable", error=type(exc).__name__)
            if ok and not await self.instance.app.can_write():
                ok = False
                if serving:
                    log.warning("writer_unavailable")
            if ok and self.instance.app.writes_failing:  # batches fail: does a write commit now?
                try:
                    await asyncio.wait_for(loop.run_in_executor(None, self.store.probe_write), timeout=interval * 2)
                    self.instance.app.writes_recovered()
                    log.info("writes_commit_again")
                except Exception as exc:  # noqa: BLE001 - a write that cannot commit: not serving
                    ok = False
                    if serving:
                        log.warning("writes_fail", error=type(exc).__name__)
            if ok != serving:
                serving = ok
                await self.endpoint.set_health(ok)
                if ok:
                    log.info("store_reachable_again")
            await asyncio.sleep(interval)

    async def start(self, health_interval: float = 1.0) -> None:
        try:
            await self.instance.start()
        except ListenError:
            self.instance.close()
            raise
        await self.endpoint.grpc.start()
        await self.endpoint.set_health(True)
        self._watcher = asyncio.create_task(self._watch_store(health_interval), name="pinlife-health")
        access = self.instance.access
        if access is not None:
            log.info("mutual_tls", terminals=len(access.terminals))
        for warning in self.instance.warnings:
            log.warning("private_file_exposed", message=warning)
        clock = self.instance.clock
        if not (isinstance(clock, ServiceClock) and clock.is_system):
            log.warning(
                "clock_moved", message="the service clock is not the system clock (PINLIFE_CLOCK)", now=clock().isoformat()
            )
        log.info("serving", port=self.port, store=self.store.dialect, writer=self.settings.writer, metrics_port=self.metrics_port)

    async def stop(self, grace: float = 5.0, *, process_exits: bool = False) -> None:
        """NOT_SERVING; new calls refused UNAVAILABLE while those in flight
        finish (up to grace seconds); then gRPC stops, the writer commits
        what it holds, and the store closes.

        process_exits: the caller ends the process next (serve), so gRPC is
        not shut down: calls still arriving are refused UNAVAILABLE until the
        process ends, and the connections then close with it (UNAVAILABLE
        to any call left). gRPC's own shutdown would cancel a call it had
        received but not yet handed over, which a client sees as CANCELLED."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.endpoint.set_health(False)
        self.instance.log_signal.close()  # watchers end UNAVAILABLE and resume elsewhere
        loop = asyncio.get_running_loop()
        started = loop.time()
        gate = self.endpoint.gate
        if not await gate.drained(grace):
            log.warning("stopping_with_calls_in_flight", calls=gate.in_flight, grace_s=grace)
        if not process_exits:
            await self.endpoint.grpc.stop(max(0.0, grace - (loop.time() - started)))
        await self.instance.stop()
        log.info("stopped")


RETRY_FIRST = 0.25  # s: the first wait before trying an unreachable database again ...
RETRY_MAX = 8.0  # ... doubling up to this, each wait drawn at random from its upper half (jitter)


async def wait_for_database(settings: Settings, stop: asyncio.Event) -> bool:
    """Reach the store (and the auditors' database, if apart) before
    anything else opens it: a database that cannot be reached is tried again
    with exponential backoff and jitter, each failure logged
    (`database_unavailable`), for up to [store] startup_retry_seconds; then
    StoreUnavailable. StoreRefused at once for what retrying cannot fix (a
    missing database, a login or privilege refused). False if stopped
    meanwhile (SIGTERM)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_retry_seconds
    urls = [settings.database_url] + ([settings.audit_database_url] if settings.audit_database_url else [])
    delay, attempt = RETRY_FIRST, 0
    while True:
        attempt += 1
        try:
            for url in urls:
                await asyncio.to_thread(reach, url)
        except StoreUnavailable as exc:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreUnavailable(
                    f"gave up after {attempt} attempt{'s' if attempt > 1 else ''} in "
                    f"{settings.startup_retry_seconds:g} s (PINLIFE_STARTUP_RETRY_SECONDS; exit 3 for the "
                    f"supervisor to start it again): {exc}"
                ) from None
            wait = min(remaining, random.uniform(delay / 2, delay))
            log.warning("database_unavailable", message=str(exc), attempt=attempt, retry_in_s=round(wait, 2))
            delay = min(delay * 2, RETRY_MAX)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
                return False
            except TimeoutError:
                continue
        if attempt > 1:
            log.info("database_reachable", attempts=attempt)
        return True


async def serve(settings: Settings, keys: KeyRing, access: AccessConfig | None = None) -> int:
    """Serve until SIGINT or SIGTERM (exit status 0), or until the writer
    process dies (1: the supervisor starts a fresh server). A server that
    may not start (STARTUP_REFUSALS) says why in one line
    (`refusing_to_start`) and exits 2; one whose database stays unreachable
    for [store] startup_retry_seconds exits 3 (service/cli/exits.py).
    After serving, the caller ends the process at once with the status
    returned (os._exit: gRPC is left to close with it, Server.stop)."""
    if access is None:  # the first line a newcomer sees
        log.warning(
            "development_mode",
            message="plain text on loopback, no authentication: for development only; every call without "
            "an x-pinlife-terminal header is the one terminal dev-terminal, throttled as one",
            listen=settings.listen,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await wait_for_database(settings, stop):
            log.info("stopped", message="stopped while waiting for the database")
            return 0
        server = Server(settings, keys, access=access)
        await server.start()
    except STARTUP_REFUSALS as exc:
        log.error("refusing_to_start", message=str(exc))
        return 2
    except StoreUnavailable as exc:
        log.error("database_unavailable", message=str(exc))
        return 3
    except SQLAlchemyError as exc:  # met while building the instance (the key checks' reads and writes)
        problem = diagnose(exc, settings.database_url)
        if problem is None:
            raise
        log.error("refusing_to_start" if isinstance(problem, StoreRefused) else "database_unavailable", message=str(problem))
        return 2 if isinstance(problem, StoreRefused) else 3
    freeze_startup_objects()
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    failed = server.failed.is_set()
    if failed:
        log.error("stopping_after_writer_death", message="the writer process died: exiting for a restart")
    await server.stop(grace=settings.grace_seconds, process_exits=True)
    return 1 if failed else 0
