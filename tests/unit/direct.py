"""The API's servicers (service/api/servicers.py) called directly, without a
channel or a database: the app (make_app, the thread writer) over the
in-memory store (tests/unit/fakes.py), on an event loop of the test's own.

A request and its response go through the wire format, as over gRPC; an
error comes back as the grpc.RpcError a client gets (its code, its details
and the google.rpc.Status in its trailing metadata: tests/rpc.py reads the
field violations, precondition failures and retry delays from it). So the
rules of the API (the mapping of requests, answers and errors, validation,
the procedures, replays, throttling) are tested here in milliseconds; what
only a real channel shows (TLS and roles from certificates, message size
limits, undecodable bytes, health, reflection, concurrency) stays in
tests/e2e, and the stores' own contract in tests/store.

    service = Service(FakeClock(T0))
    client = service.client("clinic-reader-01")
    client.enroll("card-1", {USER: "4821"})
    with pytest.raises(grpc.RpcError) as err:
        client.verify("card-1", USER, "12a4")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from pinlife.api.auth import development_caller
from pinlife.api.rate_limit import RateLimiter
from pinlife.api.servicers import CounterServicer, Gate, PinServicer, StoreServicer
from pinlife.app.handlers import Caller
from pinlife.bootstrap.instance import make_app
from pinlife.config.offices import load_policy
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.keys.ring import KeyRing
from tests.clock import FakeClock
from tests.keys import ring
from tests.rpc import Calls, development_metadata
from tests.unit.fakes import FakeStore

KEYS = ring("k-1", {"k-1": b"k" * 32})


class Refused(grpc.RpcError):
    """The error of a call, as a client's grpc.RpcError shows it."""

    def __init__(self, status: grpc.Status):
        super().__init__(status.details)
        self.status = status

    def code(self) -> grpc.StatusCode:
        return self.status.code

    def details(self) -> str:
        return self.status.details

    def trailing_metadata(self):
        return self.status.trailing_metadata


class Context:
    """A grpc.aio.ServicerContext, as much of one as the servicers use: the
    call's metadata; an abort raises the error the client would get. `caller`:
    who the calling client stands for when the service identifies callers
    with `as_given` (what TLS and the access file make of a certificate)."""

    def __init__(self, metadata, caller: Caller | None = None):
        self.metadata = tuple(metadata)
        self.caller = caller

    def invocation_metadata(self):
        return self.metadata

    def cancelled(self) -> bool:
        return False

    def auth_context(self) -> dict:
        return {}

    async def abort_with_status(self, status: grpc.Status):
        raise Refused(status)


def as_given(context: Context) -> Caller:
    """Identifies a call's caller as its client was made (Service.client(caller=...))."""
    assert context.caller is not None, "this client was made without a caller"
    return context.caller


def policy(clock: FakeClock, throttle: ThrottlePolicy = ThrottlePolicy()) -> Policy:
    """The rules' configuration a server has by default: the shipped offices
    file (hours, wards, store chains), this throttle, the 24 h replay window."""
    return load_policy(None, throttle, clock().date())


class Service:
    """A PinLife over a FakeStore and the servicers of its endpoint, started
    (close() stops it). `identify` names the caller of each call from its
    context (by default the development headers, as a server without TLS);
    `limiter`: the request rates its gate applies (none: no limit)."""

    def __init__(
        self,
        clock: FakeClock,
        rules: Policy | None = None,
        *,
        store: FakeStore | None = None,
        keys: KeyRing = KEYS,
        identify: Callable[[Context], Caller] = development_caller,
        limiter: RateLimiter | None = None,
    ):
        self.clock = clock
        self.store = store if store is not None else FakeStore()
        self.loop = asyncio.new_event_loop()
        self.app = make_app(self.store, keys, clock, rules or policy(clock), writer="thread")
        self.loop.run_until_complete(self.app.start())
        gate = Gate(limiter)
        self.servicers = {
            "pins": PinServicer(self.app, identify, gate),
            "counter": CounterServicer(self.app, identify, gate),
            "store": StoreServicer(self.app, identify, gate),
        }

    def call(self, method, request, metadata=(), caller: Caller | None = None):
        """One call, its request and response through their wire format."""
        request = type(request).FromString(request.SerializeToString())
        response = self.loop.run_until_complete(method(request, Context(metadata, caller)))
        return type(response).FromString(response.SerializeToString())

    def client(
        self,
        terminal: str = "unit-terminal",
        office: str | None = None,
        chain: str | None = None,
        caller: Caller | None = None,
    ) -> Client:
        """A client sending the development headers of this terminal (and
        office or chain), and standing for `caller` (see as_given)."""
        return Client(self, terminal, office, chain, caller)

    def close(self) -> None:
        self.loop.run_until_complete(self.app.stop())
        self.loop.close()


class Stub:
    """A servicer behind a generated stub's interface: stub.Method(request, timeout=..., metadata=...)."""

    def __init__(self, service: Service, servicer, caller: Caller | None = None):
        self._service, self._servicer, self._caller = service, servicer, caller

    def __getattr__(self, name: str):
        method = getattr(self._servicer, name)

        def call(request, timeout: float | None = None, metadata=()):
            return self._service.call(method, request, metadata, self._caller)

        return call


class Client(Calls):
    """tests/e2e/harness.Client's calls, straight into the servicers."""

    def __init__(
        self,
        service: Service,
        terminal: str,
        office: str | None = None,
        chain: str | None = None,
        caller: Caller | None = None,
    ):
        self.pins = Stub(service, service.servicers["pins"], caller)
        self.counter = Stub(service, service.servicers["counter"], caller)
        self.store = Stub(service, service.servicers["store"], caller)
        self.metadata = development_metadata(terminal, office, chain)
