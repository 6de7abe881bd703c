"""Who may call what, and a terminal throttled, through the servicers on the
in-memory store (tests/unit/direct.py): the role table; every role against
every RPC but AuditService's (refused PERMISSION_DENIED, the refusal
recorded once per window in the terminal's stream); a terminal failing on
more distinct cards than allowed throttled RESOURCE_EXHAUSTED with a retry
delay and the throttle recorded; the development-mode headers, every
malformed one refused. Moved down from tests/e2e/test_access.py, which keeps
the role matrix over mutual TLS on each store (AuditService's RPCs with it)
and what the TLS layer decides."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from pinlife.app.handlers import Caller
from pinlife.domain.access import COUNTERS, RPC_ROLES, Role
from pinlife.domain.policy import ThrottlePolicy
from pinlife.domain.streams import terminal_stream
from pinlife.v1 import common_pb2 as pb
from tests.clock import FakeClock
from tests.rpc import CALLS, CALLS_AT, SIGNATURE, USER, retry_seconds
from tests.unit.direct import Service, as_given, policy

ROLES = [r for r in Role if r is not Role.DEVELOPMENT]
OFFICE = "naka-ward-office"  # of the shipped Yokohama calendar
AUDIT_RPCS = {rpc for rpc in RPC_ROLES if rpc.startswith("/pinlife.v1.AuditService/")}


def terminal(role: Role) -> Caller:
    """The terminal `<role>-01` as the access file registers it (counters with their office)."""
    return Caller(role.value, f"{role.value}-01", OFFICE if role in COUNTERS else None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(CALLS_AT)  # fixed: one refusal window per terminal


def test_medical_reader_only_verifies_and_auditor_only_reads():
    assert RPC_ROLES["/pinlife.v1.PinService/VerifyPin"] >= {Role.MEDICAL_READER}
    assert {rpc for rpc, roles in RPC_ROLES.items() if Role.MEDICAL_READER in roles} == {"/pinlife.v1.PinService/VerifyPin"}
    assert len(AUDIT_RPCS) == 8 and all(RPC_ROLES[rpc] == {Role.AUDITOR} for rpc in AUDIT_RPCS)
    assert {rpc for rpc, roles in RPC_ROLES.items() if Role.AUDITOR in roles} == {
        "/pinlife.v1.PinService/GetPinStatus",
        *AUDIT_RPCS,
    }


def test_every_role_against_every_rpc(clock):
    service = Service(clock, identify=as_given)
    store = service.store
    try:
        counter = service.client(caller=terminal(Role.WARD_OFFICE))
        counter.enroll("card-T1", {USER: "4821", SIGNATURE: "ABC123"})
        assert set(CALLS) == set(RPC_ROLES), "every RPC of the role table is exercised"
        # the kiosk's call completes a reservation; the reset app's role comes later in ROLES
        CALLS["/pinlife.v1.PinService/ReserveStoreReset"](service.client(caller=terminal(Role.SMARTPHONE_APP)))
        for role in ROLES:
            client = service.client(caller=terminal(role))
            stream = terminal_stream(f"{role.value}-01")
            refused_before = False
            for rpc, call in CALLS.items():
                if rpc in AUDIT_RPCS:
                    continue  # AuditService reads the real store: tests/e2e/test_access.py
                allowed = role in RPC_ROLES[rpc]
                before = len(store.log.stream(stream))
                try:
                    call(client)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as err:
                    code = err.code()
                if allowed:
                    assert code == grpc.StatusCode.OK, (role, rpc, code)
                    continue
                assert code == grpc.StatusCode.PERMISSION_DENIED, (role, rpc, code)
                denied = store.log.stream(stream)
                if refused_before:  # aggregated: counted, recorded with the terminal's next window
                    assert len(denied) == before
                    continue
                refused_before = True
                assert len(denied) == before + 1
                assert denied[-1].event_type == "AccessDenied"
                assert denied[-1].payload["rpc"] == rpc and denied[-1].envelope.terminal_id == f"{role.value}-01"
                assert denied[-1].envelope.channel == role.value and denied[-1].payload["repeated"] == 0
        # Events carry the terminal and its role as the channel.
        verifies = [e for e in store.log.stream("card-T1") if e.event_type == "PinVerified"]
        assert {(e.envelope.terminal_id, e.envelope.channel) for e in verifies} >= {("medical_reader-01", "medical_reader")}
    finally:
        service.close()


def test_a_terminal_failing_on_many_cards_is_throttled_and_recorded(clock):
    throttle = ThrottlePolicy(max_distinct_cards=3, window=timedelta(seconds=60), penalty=timedelta(seconds=30))
    service = Service(clock, policy(clock, throttle), identify=as_given)
    counter = service.client(caller=terminal(Role.WARD_OFFICE))
    reader = service.client(caller=terminal(Role.MEDICAL_READER))
    other = service.client(caller=terminal(Role.SELF_SERVICE))
    try:
        cards = [f"card-E{i}" for i in range(6)]
        for card in cards:
            counter.enroll(card, {USER: "4821"})
        for card in cards[:4]:  # failures on 4 distinct cards: more than 3
            assert reader.verify(card, USER, "0000").check.result == pb.CHECK_RESULT_WRONG_PIN
        with pytest.raises(grpc.RpcError) as err:
            reader.verify(cards[5], USER, "4821")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_seconds(err.value) == 30  # the whole penalty: the clock stands still
        # Recorded, visible to auditors in the terminal's stream.
        (throttled,) = [
            e for e in service.store.log.stream(terminal_stream("medical_reader-01")) if e.event_type == "TerminalThrottled"
        ]
        assert throttled.payload["distinct_cards"] == 4
        # The refused attempt cost the holder nothing; the holders are not locked out.
        assert [e.event_type for e in service.store.log.stream(cards[5])] == ["CardEnrolled"]
        for card in cards[:4]:
            assert other.verify(card, USER, "4821").check.result == pb.CHECK_RESULT_OK
    finally:
        service.close()


# --- development mode: the terminal's own headers ---------------------------
@pytest.fixture
def service(clock):
    s = Service(clock)
    yield s
    s.close()


@pytest.mark.parametrize(
    "header, value",
    [
        ("x-pinlife-terminal", "reader 07"),
        ("x-pinlife-terminal", "x" * 65),
        ("x-pinlife-terminal", ""),
        ("x-pinlife-terminal", "terminal:reader-07"),
        ("x-pinlife-office", "naka ward office"),
        ("x-pinlife-chain", "seven/eleven"),
    ],
    ids=["space", "too-long", "empty", "colon", "office", "chain"],
)
def test_development_mode_refuses_a_malformed_terminal_header(service, header, value):
    """It was ignored: the call ran as dev-terminal (or as no counter)."""
    client = service.client()
    client.metadata = [(header, value)]
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == f"{header} must be 1 to 64 of A-Z a-z 0-9 . _ -"
    assert service.store.log.stream(terminal_stream("dev-terminal")) == []
    assert service.store.log.head_position() == 0


def test_development_mode_refuses_a_terminal_header_given_twice(service):
    client = service.client()
    client.metadata = [("x-pinlife-terminal", "reader-07"), ("x-pinlife-terminal", "reader-08")]
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "x-pinlife-terminal is given twice"


def test_development_mode_takes_well_formed_headers_and_each_is_the_caller(service):
    client = service.client("reader-07", office=OFFICE, chain="seven")
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    client.enroll("card-D2", {USER: "4821"})
    (enrolled,) = service.store.log.stream("card-D2")
    assert (enrolled.envelope.terminal_id, enrolled.envelope.channel) == ("reader-07", "development")
