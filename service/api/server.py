"""The gRPC endpoint of an instance: a grpc.aio server with the four
services, standard health checking and server reflection, request size
limits, bound to its address (mutual TLS with an access file, plain text
otherwise). It takes the app and the audit facade as they are built by the
composition root (service/bootstrap) and knows nothing of the store.

As grpc's own examples separate `create_server` from `serve`, this module
only creates, registers and binds; starting, health and stopping in order
are service/bootstrap/serving.py's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..app.audit import Audit
from ..app.service import PinLife
from ..config.access import AccessConfig
from ..domain.rate import RatePolicy
from ..v1 import audit_service_pb2, counter_service_pb2, pin_service_pb2, store_service_pb2
from .audit_servicer import AuditServicer
from .auth import CertificateAuthenticator, development_caller
from .rate_limit import RateLimiter
from .registration import add_servicer
from .servicers import CounterServicer, Gate, PinServicer, StoreServicer

if TYPE_CHECKING:  # prometheus_client is loaded only with metrics on, OpenTelemetry with tracing on
    from ..runtime.metrics import Metrics
    from ..runtime.tracing import Tracing

MAX_REQUEST_BYTES = 64 * 1024
SERVICES = (
    pin_service_pb2.DESCRIPTOR.services_by_name["PinService"],
    counter_service_pb2.DESCRIPTOR.services_by_name["CounterService"],
    store_service_pb2.DESCRIPTOR.services_by_name["ConvenienceStoreService"],
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
)
SERVICE_NAMES = tuple(s.full_name for s in SERVICES)


class ListenError(Exception):
    """A port this server cannot listen on (in use, or an address not its own)."""


class Endpoint:
    """The gRPC server of one instance, bound; `port` is the one it got."""

    def __init__(
        self,
        app: PinLife,
        audit: Audit,
        listen: str,
        access: AccessConfig | None,
        metrics: Metrics | None,
        rates: Mapping[str, RatePolicy | None] | None = None,
        tracing: Tracing | None = None,
    ):
        identify = CertificateAuthenticator(access) if access else development_caller
        self.health = health.aio.HealthServicer()
        self.grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        # One for every servicer: a stopping server admits no call; each
        # terminal within its role's request rate (on this instance's
        # monotonic clock, never the service clock, which a test may fix).
        limiter = RateLimiter(rates, metrics=metrics) if rates and any(rates.values()) else None
        self.gate = Gate(limiter)
        self.servicers = (
            PinServicer(app, identify, self.gate, metrics, tracing),
            CounterServicer(app, identify, self.gate, metrics, tracing),
            StoreServicer(app, identify, self.gate, metrics, tracing),
            AuditServicer(app, audit, identify, self.gate, metrics, tracing),
        )
        for servicer, descriptor in zip(self.servicers, SERVICES, strict=True):
            add_servicer(self.grpc, servicer, descriptor)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.grpc,
        )
        try:
            if access is not None:
                credentials = grpc.ssl_server_credentials(
                    [(access.tls.key, access.tls.cert)], root_certificates=access.tls.client_ca, require_client_auth=True
                )
                self.port = self.grpc.add_secure_port(listen, credentials)
            else:
                self.port = self.grpc.add_insecure_port(listen)
        except RuntimeError:  # grpc's "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise ListenError(f"cannot listen on {listen} (PINLIFE_LISTEN): the address is in use or not this host's")

    async def set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)


def create_server(
    app: PinLife,
    audit: Audit,
    *,
    listen: str,
    access: AccessConfig | None = None,
    metrics: Metrics | None = None,
    rates: Mapping[str, RatePolicy | None] | None = None,
    tracing: Tracing | None = None,
) -> Endpoint:
    """The gRPC server of an instance, its servicers registered and its
    address bound (ListenError if it cannot be); `rates`: each role's
    request rate (Settings.rates(); none: no limit); `tracing`: none, off."""
    return Endpoint(app, audit, listen, access, metrics, rates, tracing)
