"""Prometheus metrics (service/runtime/metrics.py) scraped from a real server's
metrics port during traffic and parsed with the client library's own
parser (strict: the exposition must parse whole): RPCs by type, method and
code with go-grpc-prometheus's names and labels, PIN checks by result,
locks, resets, group-commit batches, the store's pools, watchers, the
standard process and platform collectors, the build info; and no card id,
terminal id, office or PIN in any label. On SQLite and PostgreSQL."""

from __future__ import annotations

import platform
import sys
import threading
import time
import urllib.request
from datetime import UTC
from importlib import metadata

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pinlife.runtime.clock import ServiceClock
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from tests.clock import FakeClock
from tests.e2e.harness import Client, ThreadedServer
from tests.procedures import CARD, NAKA, PINS, TUESDAY_10, USER, enroll, lock, reset

PERSONAL = ("card-M", "clinic-reader-m", "naka-counter-m", NAKA, "4821", "0000", "1357", "KX73PQ")


def scrape(server: ThreadedServer) -> dict[tuple[str, tuple], float]:
    """Every sample: (name, sorted labels) -> value."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    families = list(text_string_to_metric_families(text))  # raises on any line it cannot parse
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a metric family is exposed twice"
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    labels = {v for _, pairs in out for _, v in pairs}
    for word in PERSONAL:
        assert not any(word in v for v in labels), f"{word!r} appears in a label"
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server(db_url, keys):

    srv = ThreadedServer(db_url, keys, clock=FakeClock(TUESDAY_10.astimezone(UTC)), metrics=True)
    yield srv
    srv.close()


def test_metrics_count_rpcs_checks_locks_resets_batches_and_watchers(server):
    reader = Client(server.target, "clinic-reader-m")
    counter = Client(server.target, "naka-counter-m", office=NAKA)
    auditor = Client(server.target, "audit-m")
    try:
        before = scrape(server)
        assert value(before, "pinlife_watch_subscribers") == 0
        enroll(counter, "card-M")
        assert reader.verify("card-M", USER, PINS[USER]).check.result == pb.CHECK_RESULT_OK
        assert lock(reader, "card-M", USER, "0000", 3).locked_now
        reset(counter, "card-M", USER, "1357", documents=[CARD])
        assert reader.verify("card-M", USER, "1357").check.result == pb.CHECK_RESULT_OK
        with pytest.raises(grpc.RpcError) as err:  # a card that is not enrolled
            reader.verify("card-none", USER, "1234")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # a watcher open while we scrape
        stream = auditor.audit.WatchEvents(apb.WatchEventsRequest(after_position=0))
        first = next(stream)
        assert first.event.position == 1
        seen = threading.Event()

        def drain():
            try:
                for _ in stream:
                    seen.set()
            except grpc.RpcError:
                pass  # cancelled below

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        assert seen.wait(5)  # a second event delivered: the first one's lag is observed
        samples = scrape(server)
        stream.cancel()
        t.join(5)

        verify = dict(grpc_type="unary", grpc_service="pinlife.v1.PinService", grpc_method="VerifyPin")
        assert value(samples, "grpc_server_started_total", **verify) == 6
        assert value(samples, "grpc_server_handled_total", **verify, grpc_code="OK") == 5
        assert value(samples, "grpc_server_handled_total", **verify, grpc_code="NOT_FOUND") == 1
        assert value(samples, "grpc_server_handling_seconds_count", **verify) == 6
        assert value(samples, "grpc_server_handling_seconds_bucket", **verify, le="+Inf") == 6
        reset_pin = dict(grpc_type="unary", grpc_service="pinlife.v1.CounterService", grpc_method="ResetPin")
        assert value(samples, "grpc_server_handled_total", **reset_pin, grpc_code="OK") == 1
        watch = dict(grpc_type="server_stream", grpc_service="pinlife.v1.AuditService", grpc_method="WatchEvents")
        assert value(samples, "grpc_server_started_total", **watch) == 1  # open: started, not handled yet
        assert not any(
            name == "grpc_server_handled_total" and dict(labels).get("grpc_method") == "WatchEvents" for name, labels in samples
        )
        check = dict(pin_type="user_certificate", channel="development")
        assert value(samples, "pinlife_pin_checks_total", **check, result="ok") == 2
        assert value(samples, "pinlife_pin_checks_total", **check, result="wrong_pin") == 2
        assert value(samples, "pinlife_pin_checks_total", **check, result="locked") == 1
        assert value(samples, "pinlife_pin_locks_total", **check) == 1
        assert value(samples, "pinlife_pin_resets_total", pin_type="user_certificate", procedure="ResetPin") == 1
        assert value(samples, "pinlife_batch_commands_count") >= 7
        assert value(samples, "pinlife_batch_commands_sum") >= 7
        assert value(samples, "pinlife_batch_seconds_count") == value(samples, "pinlife_batch_commands_count")
        assert value(samples, "pinlife_writer_failures_total", kind="stalled") == 0
        assert value(samples, "pinlife_watch_subscribers") == 1
        assert value(samples, "pinlife_watch_lag_seconds_count") >= 1
        assert ("pinlife_store_pool_connections", (("engine", "reader"), ("state", "in_use"))) in samples
        assert ("pinlife_store_pool_connections", (("engine", "writer"), ("state", "idle"))) in samples

        watch_cancelled = dict(**watch, grpc_code="CANCELLED")
        for _ in range(50):  # the server sees the watcher go (its next write or wake-up), then counts the call
            after = scrape(server)
            if value(after, "pinlife_watch_subscribers") == 0 and value(after, "grpc_server_handled_total", **watch_cancelled):
                break
            time.sleep(0.1)
        assert value(after, "pinlife_watch_subscribers") == 0
        assert value(after, "grpc_server_handled_total", **watch_cancelled) == 1
        assert value(after, "grpc_server_handling_seconds_count", **watch) == 1
    finally:
        for c in (reader, counter, auditor):
            c.close()


def test_the_standard_collectors_and_the_build_info_are_exposed(server):
    samples = scrape(server)
    names = {name for name, _ in samples}
    # process_* (Linux /proc) and the platform and GC collectors, of this server's process
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"):
        assert name in names, name
    assert value(samples, "process_resident_memory_bytes") > 0
    python = dict(
        implementation=platform.python_implementation(),
        major=str(sys.version_info.major),
        minor=str(sys.version_info.minor),
        patchlevel=str(sys.version_info.micro),
        version=platform.python_version(),
    )
    assert value(samples, "python_info", **python) == 1
    assert "python_gc_collections_total" in names
    build = dict(version=metadata.version("pinlife"), python_version=platform.python_version())
    assert value(samples, "pinlife_build_info", **build) == 1
    assert [labels for name, labels in samples if name == "pinlife_build_info"] == [tuple(sorted(build.items()))]


def test_the_writer_process_has_its_own_process_metrics(db_url, keys):
    srv = ThreadedServer(db_url, keys, clock=ServiceClock(fixed=TUESDAY_10.astimezone(UTC)), writer="process", metrics=True)
    try:
        samples = scrape(srv)
        assert value(samples, "pinlife_writer_process_resident_memory_bytes") > 0
        assert value(samples, "pinlife_writer_process_start_time_seconds") >= value(samples, "process_start_time_seconds")
    finally:
        srv.close()


def test_a_server_without_a_metrics_address_serves_none(db_url, keys):
    srv = ThreadedServer(db_url, keys)
    try:
        assert srv.server.instance.metrics is None and srv.server.metrics_port is None
    finally:
        srv.close()
