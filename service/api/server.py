"""The gRPC server: grpc.aio, PinService and CounterService, standard health
checking and server reflection, request size limits, graceful stop."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pinlife.v1 import audit_service_pb2, counter_service_pb2, pin_service_pb2, store_service_pb2
from service.access_config import AccessConfig
from service.api.registration import add_servicer
from service.api.auth import CertificateAuthenticator, development_caller
from service.api.audit_servicer import AuditServicer
from service.api.servicers import CounterServicer, Gate, PinServicer, StoreServicer
from service.app.audit import Audit
from service.app.log_signal import LogSignal
from service.app.bootstrap import make_app
from service.clock import Clock, ServiceClock
from service.domain.policy import Policy, ThrottlePolicy
from service.offices import load_policy
from service.config import Settings
from service.file_modes import FileModeError, check_private_file
from service.heap import freeze_startup_objects
from service.keys import KeyRing
from service.schema_check import SchemaMismatch, check_schema
from service.maintenance import Maintenance
from service.store.checkpoints import LeafFeed
from service.store.audit_reads import StoreAuditReads
from service.store.event_store import EventStore
from service.store.key_checks import key_problems

if TYPE_CHECKING:
    from service.metrics import Metrics
    from service.store.pg_listener import LogListener

log = structlog.get_logger()

MAX_REQUEST_BYTES = 64 * 1024


class KeysRefused(Exception):
    """The key file does not fit this store (service/store/key_checks.py)."""


class ListenError(Exception):
    """A port this server cannot listen on (in use, or an address not its own)."""


STARTUP_REFUSALS = (SchemaMismatch, FileModeError, KeysRefused, ListenError)  # raised by Server(...): the server does not start
SERVICE_NAMES = (
    pin_service_pb2.DESCRIPTOR.services_by_name["PinService"].full_name,
    counter_service_pb2.DESCRIPTOR.services_by_name["CounterService"].full_name,
    store_service_pb2.DESCRIPTOR.services_by_name["ConvenienceStoreService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


class Server:
    """One service instance: the app, its gRPC server and its health state."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyRing,
        clock: Clock | None = None,
        access: AccessConfig | None = None,
        policy: Policy | None = None,
    ):
        self.settings = settings
        self.access = access
        # Refuse to start (STARTUP_REFUSALS) rather than serve and fail every
        # call, or serve with an exposed private key in production.
        check_schema(settings.database_url)
        self.warnings: list[str] = []
        if access is not None and access.tls.key_path is not None:
            warning = check_private_file(
                access.tls.key_path, production=settings.production, what="the TLS private key ([tls] key)"
            )
            if warning:
                self.warnings.append(warning)
        self.clock = clock or settings.service_clock()
        throttle = access.throttle if access else ThrottlePolicy()
        if policy is None:
            policy = replace(
                load_policy(settings.offices_file, throttle, self.clock().date()),
                replay_window=timedelta(hours=settings.replay_window_hours),
            )
        self.store = EventStore(settings.database_url, read_pool=settings.pool_size)
        if problems := key_problems(self.store, keys, self.clock()):
            self.store.close()
            raise KeysRefused("; ".join(problems))
        self.maintenance = Maintenance(self.store, keys, self.clock, policy.replay_window)
        # Crash-only: a writer process that dies stops this server, which
        # exits non-zero for its supervisor to start a fresh one.
        self.failed = asyncio.Event()
        self.metrics: Metrics | None = None
        if settings.metrics_listen:  # prometheus_client is loaded only then
            from service.metrics import Metrics

            self.metrics = Metrics()
        self.metrics_port: int | None = None

        def writer_died() -> None:
            if self.metrics is not None:
                self.metrics.writer_died()
            self.failed.set()

        self.app = make_app(
            self.store,
            keys,
            self.clock,
            policy,
            writer=settings.writer,
            database_url=settings.database_url,
            batch_max=settings.batch_max,
            batch_deadline=settings.batch_deadline_seconds,
            log_format=settings.log_format,
            on_writer_death=writer_died,
            leaves=LeafFeed(self.store, keys, self.clock),  # a thread writer's checkpoints (a writer process has its own)
        )
        identify = CertificateAuthenticator(access) if access else development_caller
        self.health = health.aio.HealthServicer()
        self.grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        pins, counters, stores = (
            PinServicer(self.app, identify),
            CounterServicer(self.app, identify),
            StoreServicer(self.app, identify),
        )
        add_servicer(self.grpc, pins, pin_service_pb2.DESCRIPTOR.services_by_name["PinService"])
        add_servicer(self.grpc, counters, counter_service_pb2.DESCRIPTOR.services_by_name["CounterService"])
        add_servicer(self.grpc, stores, store_service_pb2.DESCRIPTOR.services_by_name["ConvenienceStoreService"])
        self.log_signal = LogSignal()
        self.app.writer.after_batch.append(self.log_signal.notify)
        self.log_listener: LogListener | None = None
        if self.store.dialect == "postgresql":  # psycopg is loaded only then
            from service.store.pg_listener import LogListener

            self.log_listener = LogListener(settings.database_url, self.log_signal.notify)
        self.audit = Audit(StoreAuditReads(self.store, keys), self.app, self.store.is_unavailable, self.log_signal)
        audits = AuditServicer(self.app, self.audit, identify)
        add_servicer(self.grpc, audits, audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"])
        self.servicers = (pins, counters, stores, audits)
        self.gate = Gate()
        for servicer in self.servicers:
            servicer.gate = self.gate
        if self.metrics is not None:
            for servicer in self.servicers:
                servicer.metrics = self.metrics
            self.app.writer.on_batch.append(self.metrics.batch)
            self.app.writer.on_stall.append(self.metrics.stalled)
            self.metrics.watch_pool((("reader", self.store.reader), ("writer", self.store.writer)))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.grpc,
        )
        if access is not None:
            credentials = grpc.ssl_server_credentials(
                [(access.tls.key, access.tls.cert)], root_certificates=access.tls.client_ca, require_client_auth=True
            )
        try:
            if access is not None:
                self.port = self.grpc.add_secure_port(settings.listen, credentials)
            else:
                self.port = self.grpc.add_insecure_port(settings.listen)
        except RuntimeError:  # grpc's "Failed to bind"
            self.port = 0
        if self.port == 0:
            self.store.close()
            raise ListenError(f"cannot listen on {settings.listen} (PINLIFE_LISTEN): the address is in use or not this host's")

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _watch_store(self, interval: float) -> None:
        """Health follows the database and the writer: NOT_SERVING while the
        database cannot be reached (SERVING again by itself once it can), or
        once the writer process has died (the server is then stopping)."""
        loop = asyncio.get_running_loop()
        serving = True
        ping: asyncio.Future | None = None
        while True:
            try:
                if ping is None or ping.done():  # never more than one ping stuck on a hung path
                    ping = loop.run_in_executor(None, self.store.ping)
                await asyncio.wait_for(asyncio.shield(ping), timeout=interval * 2)
                ok = True
            except Exception as exc:  # noqa: BLE001 - any failure means not serving
                ok = False
                if serving:
                    log.warning("store_unreachable", error=type(exc).__name__)
            if ok and not await self.app.can_write():
                ok = False
                if serving:
                    log.warning("writer_unavailable")
            if ok != serving:
                serving = ok
                await self._set_health(ok)
                if ok:
                    log.info("store_reachable_again")
            await asyncio.sleep(interval)

    async def start(self, health_interval: float = 1.0) -> None:
        if self.metrics is not None:
            try:
                self.metrics_port = self.metrics.serve(self.settings.metrics_listen)
            except OSError as exc:
                self.store.close()
                raise ListenError(
                    f"cannot serve metrics on {self.settings.metrics_listen} (PINLIFE_METRICS_LISTEN): {exc.strerror or exc}"
                ) from None
        await self.app.start()
        await self.grpc.start()
        await self._set_health(True)
        self._watcher = asyncio.create_task(self._watch_store(health_interval), name="pinlife-health")
        self.maintenance.start()
        if self.log_listener is not None:
            self.log_listener.start()
        if self.access is not None:
            log.info("mutual_tls", terminals=len(self.access.terminals))
        for warning in self.warnings:
            log.warning("private_file_exposed", message=warning)
        if not (isinstance(self.clock, ServiceClock) and self.clock.is_system):
            log.warning(
                "clock_moved", message="the service clock is not the system clock (PINLIFE_CLOCK)", now=self.clock().isoformat()
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
        self._watcher.cancel()
        await self._set_health(False)
        self.log_signal.close()  # watchers end UNAVAILABLE and resume elsewhere
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not await self.gate.drained(grace):
            log.warning("stopping_with_calls_in_flight", calls=self.gate.in_flight, grace_s=grace)
        if not process_exits:
            await self.grpc.stop(max(0.0, grace - (loop.time() - started)))
        if self.log_listener is not None:
            await self.log_listener.stop()
        await self.app.stop()
        await self.maintenance.stop()
        self.store.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped")


async def serve(settings: Settings, keys: KeyRing, access: AccessConfig | None = None) -> int:
    """Serve until SIGINT or SIGTERM (exit status 0), or until the writer
    process dies (1: the supervisor starts a fresh server). A server that
    may not start (STARTUP_REFUSALS) says why in one line and exits 2.
    After serving, the caller ends the process at once with the status
    returned (os._exit: gRPC is left to close with it, Server.stop)."""
    if access is None:  # the first line a newcomer sees
        log.warning(
            "development_mode",
            message="plain text on loopback, no authentication: for development only; every call without "
            "an x-pinlife-terminal header is the one terminal dev-terminal, throttled as one",
            listen=settings.listen,
        )
    try:
        server = Server(settings, keys, access=access)
    except STARTUP_REFUSALS as exc:
        log.error("refusing_to_start", message=str(exc))
        return 2
    try:
        await server.start()
    except ListenError as exc:
        log.error("refusing_to_start", message=str(exc))
        return 2
    freeze_startup_objects()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    failed = server.failed.is_set()
    if failed:
        log.error("stopping_after_writer_death", message="the writer process died: exiting for a restart")
    await server.stop(grace=settings.grace_seconds, process_exits=True)
    return 1 if failed else 0
