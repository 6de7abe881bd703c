"""The parts of one service instance, built from settings: the store, the
runner that writes its batches (a thread of this process, or the writer
process with a store of its own), the app, the auditors' facade, the
background maintenance and, when configured, metrics. A start is refused
(STARTUP_REFUSALS) rather than serving and failing every call: a schema
that is not this release's, a key file that does not fit the store, or, in
production, an exposed private key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from ..api.server import ListenError
from ..app.audit import Audit
from ..app.batch import ATTEMPTS, ThreadRunner
from ..app.log_signal import LogSignal
from ..app.ports import LeafSink, Store, StoreFactory
from ..app.service import PinLife
from ..app.writer import BATCH_DEADLINE, GroupCommitWriter, Runner
from ..app.writer_process import ProcessRunner
from ..config.access import AccessConfig
from ..config.offices import load_policy
from ..config.settings import Settings
from ..domain.policy import Policy, ThrottlePolicy
from ..keys.file_modes import FileModeError, check_private_file
from ..keys.ring import KeyRing
from ..runtime.clock import Clock, ServiceClock
from ..store.audit_reads import StoreAuditReads
from ..store.checkpoints import CheckpointSigner
from ..store.errors import StoreRefused
from ..store.event_store import EventStore
from ..store.key_checks import key_problems
from ..store.maintenance import Maintenance
from ..store.schema_check import SchemaMismatch, check_schema
from .writer_store import WriterStore

if (
    TYPE_CHECKING
):  # loaded only when used: prometheus_client with metrics on, OpenTelemetry with tracing on, psycopg on PostgreSQL
    from ..runtime.metrics import Metrics
    from ..runtime.tracing import Tracing
    from ..store.pg_listener import LogListener

log = structlog.get_logger()


class KeysRefused(Exception):
    """The key file does not fit this store (service/store/key_checks.py)."""


# The server does not start (exit 2): a person must act. A database that
# cannot be reached (StoreUnavailable) is not among them: exit 3, restarted.
STARTUP_REFUSALS = (SchemaMismatch, FileModeError, KeysRefused, ListenError, StoreRefused)


def service_policy(settings: Settings, access: AccessConfig | None, clock: Clock) -> Policy:
    """The rules' configuration: the offices file (hours, wards, store
    chains), the access file's throttle, the replay window."""
    throttle = access.throttle if access else ThrottlePolicy()
    return replace(
        load_policy(settings.offices_file, throttle, clock().date()),
        replay_window=timedelta(hours=settings.replay_window_hours),
    )


def make_runner(
    store: Store,
    keys: KeyRing,
    clock: Clock,
    policy: Policy,
    *,
    writer: str = "thread",
    open_store: StoreFactory | None = None,
    log_format: str = "json",
    log_level: str = "info",
    on_writer_death: Callable[[], None] = lambda: None,
    leaves: LeafSink | None = None,
) -> Runner:
    """`thread`: batches on a thread of this process, against `store`,
    telling `leaves` what they commit. `process`: in a writer process that
    opens its own store with `open_store` (and needs a ServiceClock: it is
    copied into the process); if that process dies, `on_writer_death` is
    called (the server then exits)."""
    if writer == "process":
        if open_store is None or not isinstance(clock, ServiceClock):
            raise ValueError("the writer process needs a store factory and a ServiceClock")
        return ProcessRunner(open_store, keys, clock, policy, ATTEMPTS, log_format, log_level=log_level, on_death=on_writer_death)
    return ThreadRunner(store, keys, clock, policy, leaves=leaves)


def make_app(
    store: Store,
    keys: KeyRing,
    clock: Clock,
    policy: Policy = Policy(),
    *,
    writer: str = "thread",
    open_store: StoreFactory | None = None,
    batch_max: int = 256,
    batch_deadline: float | None = BATCH_DEADLINE,
    log_format: str = "json",
    log_level: str = "info",
    on_writer_death: Callable[[], None] = lambda: None,
    leaves: LeafSink | None = None,
) -> PinLife:
    """The app over a store (a real one, or a test's fake) and its
    group-commit writer, with the runner make_runner builds."""
    runner = make_runner(
        store,
        keys,
        clock,
        policy,
        writer=writer,
        open_store=open_store,
        log_format=log_format,
        log_level=log_level,
        on_writer_death=on_writer_death,
        leaves=leaves,
    )
    return PinLife(GroupCommitWriter(runner, max_batch=batch_max, batch_deadline=batch_deadline), clock, policy)


class Instance:
    """One instance's parts, built and checked; `start` and `stop` run the
    ones that have a life of their own (the writer, maintenance, the
    PostgreSQL log listener, the metrics endpoint, the span exporter).
    `tracing`: this one rather than the settings' (tests: spans in memory)."""

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
        self.access = access
        check_schema(settings.database_url)
        self.warnings: list[str] = []
        if access is not None and access.tls.key_path is not None:
            warning = check_private_file(
                access.tls.key_path, production=settings.production, what="the TLS private key ([tls] key)"
            )
            if warning:
                self.warnings.append(warning)
        self.clock = clock or settings.service_clock()
        self.policy = policy or service_policy(settings, access, self.clock)
        self.store = EventStore(settings.database_url, read_pool=settings.pool_size)
        if problems := key_problems(self.store, keys, self.clock()):
            self.store.close()
            raise KeysRefused("; ".join(problems))
        self.maintenance = Maintenance(self.store, self.clock, self.policy.replay_window)
        # Checkpoints are signed by the process that writes: this one with a
        # writer thread, else the writer process (its own signer, WriterStore).
        self.signer = CheckpointSigner(self.store, keys, self.clock) if settings.writer != "process" else None
        # Crash-only: a writer process that dies stops this instance, whose
        # process exits non-zero for its supervisor to start a fresh one.
        self.failed = asyncio.Event()
        self.metrics: Metrics | None = None
        if settings.metrics_listen:  # prometheus_client is loaded only then
            from ..runtime.metrics import Metrics

            self.metrics = Metrics()
        self.metrics_port: int | None = None
        if tracing is None and settings.tracing != "off":  # OpenTelemetry is loaded only then
            from ..runtime.tracing import Tracing

            tracing = Tracing.from_settings(settings.tracing, settings.otlp_endpoint)
        self.tracing = tracing
        self.app = make_app(
            self.store,
            keys,
            self.clock,
            self.policy,
            batch_max=settings.batch_max,
            batch_deadline=settings.batch_deadline_seconds,
            writer=settings.writer,
            open_store=WriterStore(settings.database_url),
            log_format=settings.log_format,
            log_level=settings.log_level,
            on_writer_death=self._writer_died,
            leaves=self.signer,
        )
        self.app.writer.tracing = self.tracing
        self.log_signal = LogSignal()
        self.app.writer.after_batch.append(self.log_signal.notify)
        self.log_listener: LogListener | None = None
        if self.store.dialect == "postgresql":  # psycopg is loaded only then
            from ..store.pg_listener import LogListener

            self.log_listener = LogListener(settings.database_url, self.log_signal.notify)
        # Auditors read on connections of their own (or a read replica's), so
        # that their reads never wait for, nor hold, the PIN path's.
        self.audit_store = EventStore(settings.audit_database_url or settings.database_url, read_pool=settings.audit_pool_size)
        reads = StoreAuditReads(self.audit_store, keys, timedelta(seconds=settings.clock_skew_seconds))
        self.audit = Audit(
            reads,
            self.app,
            keys.integrity,
            self.audit_store.is_unavailable,
            self.log_signal,
            max_integrity_runs=settings.max_integrity_runs,
            max_watchers=settings.max_watchers,
            max_watchers_per_terminal=settings.max_watchers_per_terminal,
        )
        if self.metrics is not None:
            self.app.writer.on_batch.append(self.metrics.batch)
            self.app.writer.on_stall.append(self.metrics.stalled)
            self.metrics.watch_pool((("reader", self.store.reader), ("writer", self.store.writer)))
            runner = self.app.writer.runner
            if isinstance(runner, ProcessRunner):  # where the batches' CPU goes: pinlife_writer_process_*
                self.metrics.watch_process("pinlife_writer", lambda: runner.pid)

    def _writer_died(self) -> None:
        if self.metrics is not None:
            self.metrics.writer_died()
        self.failed.set()

    async def start(self) -> None:
        if self.metrics is not None:
            try:
                self.metrics_port = self.metrics.serve(self.settings.metrics_listen)
            except OSError as exc:
                raise ListenError(
                    f"cannot serve metrics on {self.settings.metrics_listen} (PINLIFE_METRICS_LISTEN): {exc.strerror or exc}"
                ) from None
        await self.app.start()
        if self.signer is not None:
            self.signer.start()
        self.maintenance.start()
        if self.log_listener is not None:
            self.log_listener.start()

    async def stop(self) -> None:
        """Watchers end, the writer commits what it holds, maintenance stops,
        the signer signs a last checkpoint, and the store closes."""
        self.log_signal.close()
        if self.log_listener is not None:
            await self.log_listener.stop()
        await self.audit.stop()
        await self.app.stop()
        await self.maintenance.stop()
        if self.signer is not None:
            await asyncio.to_thread(self.signer.stop)  # a last checkpoint of the log as this instance leaves it
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the last spans exported (a collector may be slow)
        self.close()

    def close(self) -> None:
        self.store.close()
        self.audit_store.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.tracing is not None:
            self.tracing.shutdown()  # the spans still buffered are exported
