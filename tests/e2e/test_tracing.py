"""OpenTelemetry tracing (service/runtime/tracing.py) on a real server, its
spans in the SDK's InMemorySpanExporter: a call that carries a W3C
`traceparent` is a SERVER span in the caller's trace, a child of the caller's
span, and its command's trip through the group-commit writer is a
`pinlife.batch` span with a `pinlife.commit` span inside, in the same trace,
with the writer thread and with the writer process (whose commit times cross
the pipe); the call's log lines carry its trace id. Off (the default): no
tracer anywhere and OpenTelemetry not even imported."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pinlife.runtime import logs
from pinlife.runtime.clock import ServiceClock
from pinlife.runtime.tracing import Tracing
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.e2e.harness import ROOT, Client, ThreadedServer
from tests.procedures import NAKA, PINS, TUESDAY_10, USER, enroll, rid

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


def verify(client: Client, card: str, pin: str, traceparent: str | None = None):
    metadata = [*client.metadata, ("traceparent", traceparent)] if traceparent else client.metadata
    request = ppb.VerifyPinRequest(request_id=rid(), card_id=card, pin_type=USER, pin=pin)
    return client.pins.VerifyPin(request, timeout=10, metadata=metadata)


def by_name(spans, name: str) -> list:
    return [s for s in spans if s.name == name]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_traced_verify_is_a_server_span_in_the_callers_trace_with_its_batch_and_commit(db_url, keys, exporter, writer):
    srv = ThreadedServer(
        db_url, keys, clock=ServiceClock(fixed=TUESDAY_10.astimezone(UTC)), writer=writer, tracing=Tracing.in_memory(exporter)
    )
    reader, counter = Client(srv.target, "clinic-reader-t"), Client(srv.target, "naka-counter-t", office=NAKA)
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    try:
        enroll(counter, "card-T")
        exporter.clear()
        assert verify(reader, "card-T", PINS[USER], TRACEPARENT).check.result == pb.CHECK_RESULT_OK
        spans = exporter.get_finished_spans()

        [server] = by_name(spans, "pinlife.v1.PinService/VerifyPin")
        assert server.kind is SpanKind.SERVER
        assert server.context.trace_id == CALLER_TRACE  # the caller's trace
        assert server.parent is not None and server.parent.span_id == CALLER_SPAN and server.parent.is_remote
        assert dict(server.attributes) == {
            "rpc.system": "grpc",
            "rpc.service": "pinlife.v1.PinService",
            "rpc.method": "VerifyPin",
            "rpc.grpc.status_code": 0,
        }
        assert server.status.status_code is StatusCode.UNSET

        [batch] = by_name(spans, "pinlife.batch")
        assert batch.context.trace_id == CALLER_TRACE and batch.parent.span_id == server.context.span_id
        assert batch.attributes["pinlife.batch.commands"] == 1 and batch.attributes["pinlife.batch.commits"] == 1
        [commit] = by_name(spans, "pinlife.commit")
        assert commit.context.trace_id == CALLER_TRACE and commit.parent.span_id == batch.context.span_id
        # each inside the one above it (the writer process's commit times on the same clock)
        assert server.start_time <= batch.start_time <= commit.start_time <= commit.end_time <= batch.end_time <= server.end_time
        assert len(spans) == 3

        # the call's log line names its trace
        calls = [json.loads(x) for x in buf.getvalue().splitlines() if '"event":"rpc"' in x]
        [line] = [c for c in calls if c["rpc"] == "VerifyPin"]
        assert line["trace_id"] == f"{CALLER_TRACE:032x}"
        [enrolled] = [c for c in calls if c["rpc"] == "EnrollCard"]
        assert enrolled["trace_id"] != line["trace_id"]  # a call without a traceparent: a trace of its own
    finally:
        structlog.reset_defaults()
        for c in (reader, counter):
            c.close()
        srv.close()


def test_without_a_traceparent_a_call_starts_a_trace_and_codes_set_the_status(db_url, keys, exporter):
    srv = ThreadedServer(db_url, keys, tracing=Tracing.in_memory(exporter))
    reader = Client(srv.target, "clinic-reader-t")
    try:
        with pytest.raises(grpc.RpcError) as err:
            verify(reader, "card-none", "1234")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        server = by_name(exporter.get_finished_spans(), "pinlife.v1.PinService/VerifyPin")[-1]
        assert server.parent is None  # a root: its own trace
        assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
        assert server.status.status_code is StatusCode.UNSET  # the caller's mistake, not the server's error
        batches = [
            s for s in exporter.get_finished_spans() if s.name == "pinlife.batch" and s.parent.span_id == server.context.span_id
        ]
        assert len(batches) == 1  # the command went to the writer, which decided NOT_FOUND

        exporter.clear()
        with pytest.raises(grpc.RpcError):
            reader.status("card-none")  # a status read goes through the writer too (at a batch's instant)
        [status] = by_name(exporter.get_finished_spans(), "pinlife.v1.PinService/GetPinStatus")
        [batch] = by_name(exporter.get_finished_spans(), "pinlife.batch")
        assert status.parent is None and batch.parent.span_id == status.context.span_id
    finally:
        reader.close()
        srv.close()


def test_a_server_stream_is_traced_too(db_url, keys, exporter):
    srv = ThreadedServer(db_url, keys, tracing=Tracing.in_memory(exporter))
    auditor = Client(srv.target, "audit-t")
    try:
        from pinlife.v1 import audit_service_pb2 as apb

        stream = auditor.audit._stub.VerifyIntegrity(
            apb.VerifyIntegrityRequest(), metadata=[*auditor.metadata, ("traceparent", TRACEPARENT)]
        )
        list(stream)
        [span] = by_name(exporter.get_finished_spans(), "pinlife.v1.AuditService/VerifyIntegrity")
        assert span.context.trace_id == CALLER_TRACE and span.attributes["rpc.grpc.status_code"] == 0
    finally:
        auditor.close()
        srv.close()


def test_tracing_off_is_no_tracer_anywhere(db_url, keys):
    srv = ThreadedServer(db_url, keys)
    try:
        instance = srv.server.instance
        assert instance.tracing is None and instance.app.writer.tracing is None
        assert all(s.tracing is None for s in srv.server.endpoint.servicers)
    finally:
        srv.close()


def test_tracing_off_does_not_import_opentelemetry():
    code = (
        "import sys, pinlife.bootstrap.serving, pinlife.api.servicers, pinlife.app.writer, pinlife.cli.serve\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'opentelemetry imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
