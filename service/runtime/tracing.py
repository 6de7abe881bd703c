"""OpenTelemetry tracing: off by default ([telemetry] tracing). This module,
and OpenTelemetry with it, is imported only when tracing is on, and the
servicers and the writer hold None otherwise: with tracing off a call
creates no span object and costs one attribute test.

With tracing on, each RPC of pinlife's services is a SERVER span named
`pinlife.v1.PinService/VerifyPin` (gRPC's semantic conventions: rpc.system,
rpc.service, rpc.method, rpc.grpc.status_code), a child of the caller's
span when the call carries a W3C `traceparent` (and `tracestate`) header.
A command's trip through the group-commit writer is two child spans:
`pinlife.batch` (its batch handed to the runner until it came back, with
the batch's size) and `pinlife.commit` (the transaction's rows written and
its COMMIT). Health and reflection calls are not traced.

Where the batch spans are made. A batch serves many RPCs and runs in the
writer process; its spans are made on the server's side, after the batch
came back, one pair per traced command of the batch, each in its own
command's trace: every trace then shows where its call waited, and no
OpenTelemetry runs in the writer process (no exporter there, no trace
context sent down the pipe). The writer process only reports when each
transaction's commit began and ended (wall-clock nanoseconds, the same
clock on both sides: service/app/batch.py), and the spans take those times.

Spans go to an exporter through the SDK's BatchSpanProcessor: `console`
prints them to stdout (development), `otlp` sends them over OTLP/gRPC to a
collector ([telemetry] otlp_endpoint, else the OTEL_EXPORTER_OTLP_* variables,
else localhost:4317). Sampling follows the SDK's defaults (the caller's
decision when it sent one, else every trace; OTEL_TRACES_SAMPLER changes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .build import version

# gRPC's semantic conventions: a server span is an error for these codes only
# (the others are the caller's mistakes or ordinary answers).
SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_HEADERS = ("traceparent", "tracestate")


class Tracing:
    """A tracer provider of this instance's own (not the global one: two
    instances in one process, as in tests, keep theirs apart)."""

    def __init__(self, processor: SpanProcessor, exporter: SpanExporter):
        self.exporter = exporter  # where the spans go
        self.provider = TracerProvider(resource=Resource.create({"service.name": "pinlife", "service.version": version()}))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("pinlife", version())
        self._propagator = TraceContextTextMapPropagator()
        self._shut = False

    @classmethod
    def from_settings(cls, tracing: str, otlp_endpoint: str = "") -> Tracing | None:
        """None when off; else spans to the console or a collector."""
        if tracing == "off":
            return None
        exporter: SpanExporter
        if tracing == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        elif tracing == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint or None)
        else:
            raise ValueError(f"tracing must be off, console or otlp, not {tracing!r}")
        return cls(BatchSpanProcessor(exporter), exporter)

    @classmethod
    def in_memory(cls, exporter: SpanExporter) -> Tracing:
        """Spans handed to exporter as each ends (tests: the SDK's InMemorySpanExporter)."""
        return cls(SimpleSpanProcessor(exporter), exporter)

    def shutdown(self) -> None:
        """Export what is pending, then stop (once)."""
        if not self._shut:
            self._shut = True
            self.provider.shutdown()

    # -- an RPC ------------------------------------------------------------------
    def start_rpc(self, full_name: str, metadata: Iterable[tuple[str, Any]] | None) -> Span:
        """The server span of a call, a child of the caller's span if it sent a traceparent."""
        carrier = {key: value for key, value in metadata or () if key in _HEADERS and isinstance(value, str)}
        parent = self._propagator.extract(carrier) if carrier else None
        _, service, method = full_name.split("/", 2)
        return self.tracer.start_span(
            full_name[1:],
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )

    @staticmethod
    def enter(span: Span) -> object:
        """Make span the current one (what the writer captures); a token for leave."""
        return otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def leave(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def end_rpc(span: Span, code: str) -> None:
        span.set_attribute("rpc.grpc.status_code", CODES.get(code, 2))
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()

    @staticmethod
    def trace_id(span: Span) -> str:
        """For the call's log line: the trace it belongs to (W3C hex)."""
        return format(span.get_span_context().trace_id, "032x")

    # -- the writer --------------------------------------------------------------
    @staticmethod
    def current() -> Context:
        """The calling task's trace context (the RPC's span), kept with its command."""
        return otel_context.get_current()

    def batch(
        self,
        contexts: Sequence[Context | None],
        handed_ns: int,
        returned_ns: int,
        commits: Sequence[tuple[int, int]],
        failed: BaseException | None = None,
    ) -> None:
        """A batch that came back: its spans in the trace of each of its commands."""
        attributes = {"pinlife.batch.commands": len(contexts), "pinlife.batch.commits": len(commits)}
        for parent in contexts:
            if parent is None:
                continue
            span = self.tracer.start_span("pinlife.batch", context=parent, start_time=handed_ns, attributes=attributes)
            if span.is_recording():
                inner = trace.set_span_in_context(span)
                for began, ended in commits:
                    self.tracer.start_span("pinlife.commit", context=inner, start_time=began).end(end_time=ended)
                if failed is not None:
                    span.set_status(Status(StatusCode.ERROR, type(failed).__name__))
            span.end(end_time=returned_ns)
