"""Prometheus metrics (the maintained `prometheus_client`), served in the
text format over HTTP on their own port ([server] metrics_listen), apart
from the gRPC port. One registry per server instance.

The gRPC metrics have go-grpc-prometheus's names and labels (grpc_type:
unary | server_stream), so its dashboards and alerts apply as they are.
They are on the verify path: each method's series are resolved once
(`RpcMetrics`), so a call costs two dict lookups, two counter increments
and a histogram observation, not a `labels()` call per metric.

Labels never carry a card id, a terminal id, an office or a PIN: only RPC
names and codes, PIN types, channels (the callers' roles), results and
procedures, so the series are few and hold nothing personal.

    process_*, python_gc_*, python_info                    the standard collectors (this process)
    pinlife_writer_process_*                                the writer process's (when batches run there)
    pinlife_build_info{version, python_version}             1
    grpc_server_started_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}   histogram
    pinlife_pin_checks_total{pin_type, channel, result}    verify, change, a proving PIN
    pinlife_pin_locks_total{pin_type, channel}
    pinlife_pin_resets_total{pin_type, procedure}
    pinlife_batch_commands                                  histogram: commands per group commit
    pinlife_batch_seconds                                   histogram: hand-off to commit
    pinlife_writer_failures_total{kind}                     stalled (past the deadline) | died
    pinlife_store_pool_connections{engine, state}           reader | writer; in_use | idle
    pinlife_watch_subscribers                               WatchEvents streams open
    pinlife_watch_lag_seconds                               histogram: a message's oldest event's time to its delivery
    pinlife_rate_limited_total{channel}                     calls refused over their terminal's request rate
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from ..domain.commands import CompleteProxyReset, ResetPin, StoreResetPin, UnlockPin
from ..domain.outcomes import CheckOutcome, PinRestored, ProxyCompletion, ProxyResult, StoreReset
from .build import version

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class RpcMetrics:
    """One method's series, resolved once: what a call of it touches."""

    __slots__ = ("started", "_handling", "_handled", "_labels", "_family")

    def __init__(self, metrics: Metrics, full_name: str, grpc_type: str):
        _, service, method = full_name.split("/", 2)
        self._labels = (grpc_type, service, method)
        self._family = metrics.handled
        self.started = metrics.started.labels(*self._labels)
        self._handling = metrics.handling.labels(*self._labels)
        self._handled: dict[str, Any] = {}

    def handled(self, code: str, seconds: float) -> None:
        try:
            counter = self._handled[code]
        except KeyError:
            counter = self._handled[code] = self._family.labels(*self._labels, code)
        counter.inc()
        self._handling.observe(seconds)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # The standard collectors, in this registry (not the library's global one).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Gauge(
            "pinlife_build_info", "pinlife's version and Python's; always 1.", ("version", "python_version"), registry=r
        ).labels(version(), platform.python_version()).set(1)
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", ("grpc_type", "grpc_service", "grpc_method"), registry=r
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            ("grpc_type", "grpc_service", "grpc_method", "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of RPCs handled by the server.",
            ("grpc_type", "grpc_service", "grpc_method"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._methods: dict[str, RpcMetrics] = {}
        self.checks = Counter(
            "pinlife_pin_checks",
            "PIN checks (verify, change, a proving PIN), by result.",
            ("pin_type", "channel", "result"),
            registry=r,
        )
        self.locks = Counter("pinlife_pin_locks", "PINs locked by a failed check.", ("pin_type", "channel"), registry=r)
        self.resets = Counter(
            "pinlife_pin_resets", "PINs reset or unlocked, by procedure.", ("pin_type", "procedure"), registry=r
        )
        self.batch_commands = Histogram(
            "pinlife_batch_commands", "Commands per group-commit transaction.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "pinlife_batch_seconds", "A batch from hand-off to commit.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.writer_failures = Counter(
            "pinlife_writer_failures", "Batches past their deadline (stalled); writer processes that died.", ("kind",), registry=r
        )
        self.watch_subscribers = Gauge("pinlife_watch_subscribers", "WatchEvents streams open.", registry=r)
        self.watch_lag = Histogram(
            "pinlife_watch_lag_seconds",
            "From the time of a WatchEvents message's oldest event to its delivery to a watcher.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "pinlife_rate_limited",
            "Calls refused (RESOURCE_EXHAUSTED, nothing done) over their terminal's request rate, by role.",
            ("channel",),
            registry=r,
        )
        for kind in ("stalled", "died"):
            self.writer_failures.labels(kind)  # present at 0 from the start
        self._http: Any = None

    # -- hooks -------------------------------------------------------------------
    def rpc(self, full_name: str, grpc_type: str) -> RpcMetrics:
        """A method's series (grpc_type: unary or server_stream); made on its first call."""
        try:
            return self._methods[full_name]
        except KeyError:
            calls = self._methods[full_name] = RpcMetrics(self, full_name, grpc_type)
            return calls

    def watch_process(self, namespace: str, pid: Callable[[], int | None]) -> None:
        """Another process's process_* metrics (the writer process), while it runs."""
        ProcessCollector(namespace=namespace, pid=lambda: pid() or "none", registry=self.registry)

    def batch(self, items: Sequence[tuple[Any, Any]], results: Sequence[Any], seconds: float) -> None:
        """After a batch committed: its size and time, and what its commands did."""
        self.batch_commands.observe(len(items))
        self.batch_seconds.observe(seconds)
        for (cmd, caller), result in zip(items, results):
            if isinstance(result, BaseException) or getattr(result, "replayed", False):
                continue
            outcome = getattr(result, "outcome", None)
            check = outcome if isinstance(outcome, CheckOutcome) else getattr(outcome, "check", None)
            pin_type = getattr(cmd, "pin_type", None)
            pin = pin_type.value if pin_type is not None else "none"
            if isinstance(check, CheckOutcome):
                self.checks.labels(pin, caller.channel, check.result.value).inc()
                if check.locked_now:
                    self.locks.labels(pin, caller.channel).inc()
            if _reset(cmd, outcome):
                self.resets.labels(pin, type(cmd).__name__).inc()

    def delivered(self, occurred_at: datetime) -> None:
        """A message sent to a watcher: its lag from the time of its oldest event."""
        at = occurred_at if occurred_at.tzinfo else occurred_at.replace(tzinfo=UTC)  # SQLite: UTC without an offset
        self.watch_lag.observe(max(0.0, time.time() - at.timestamp()))

    def stalled(self) -> None:
        self.writer_failures.labels("stalled").inc()

    def writer_died(self) -> None:
        self.writer_failures.labels("died").inc()

    def watch_pool(self, engines: Iterable[tuple[str, Any]]) -> None:
        """The store's connection pools, read when scraped."""
        self.registry.register(_PoolCollector(list(engines)))

    # -- serving -----------------------------------------------------------------
    def serve(self, listen: str) -> int:
        """Serve /metrics on listen (HOST:PORT; port 0 picks one); the port."""
        host, _, port = listen.rpartition(":")
        self._http, _ = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _reset(cmd: Any, outcome: Any) -> bool:
    if isinstance(cmd, (ResetPin, UnlockPin)):
        return isinstance(outcome, PinRestored)
    if isinstance(cmd, CompleteProxyReset):
        return isinstance(outcome, ProxyCompletion) and outcome.result is ProxyResult.COMPLETED
    if isinstance(cmd, StoreResetPin):
        return isinstance(outcome, StoreReset) and outcome.reset
    return False


class _PoolCollector:
    def __init__(self, engines: list[tuple[str, Any]]):
        self.engines = engines

    def collect(self):
        family = GaugeMetricFamily(
            "pinlife_store_pool_connections", "Store connections by engine and state.", labels=("engine", "state")
        )
        for name, engine in self.engines:
            pool = engine.pool
            in_use = pool.checkedout() if hasattr(pool, "checkedout") else 0
            idle = pool.checkedin() if hasattr(pool, "checkedin") else 0
            family.add_metric((name, "in_use"), in_use)
            family.add_metric((name, "idle"), idle)
        yield family
