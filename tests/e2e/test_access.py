"""Mutual TLS, roles per RPC and refusals recorded, over a real TLS channel:
every role against every RPC on SQLite and PostgreSQL; what the TLS layer
alone decides (unknown, revoked, expired, foreign or ambiguous
certificates) and the development-mode headers as they cross a real
channel, on SQLite. Certificates come from trustme.

The rules behind them, through the servicers on the in-memory store
(tests/unit/test_api_access.py): the role table, every role against every
RPC but AuditService's, a terminal throttled for failing on many cards,
and every malformed development header."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
import trustme

from pinlife.config.access import load_access_config
from pinlife.domain.access import COUNTERS, RPC_ROLES, Role
from pinlife.domain.streams import terminal_stream
from pinlife.runtime.clock import ServiceClock
from pinlife.v1 import counter_service_pb2 as cpb
from tests.clock import FakeClock
from tests.e2e.harness import NO_RATE_LIMITS, Client, ThreadedServer
from tests.keys import INTEGRITY
from tests.rpc import CALLS, CALLS_AT, SIGNATURE, USER, field_violations, precondition_violations

ROLES = [r for r in Role if r is not Role.DEVELOPMENT]
OFFICE = "naka-ward-office"  # of the shipped Yokohama calendar
# A Tuesday, 10:00 in Tokyo: the ward office and the store kiosks are open.
OPEN_HOURS = ServiceClock(fixed=CALLS_AT)


class Pki:
    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.ca = trustme.CA(organization_name="pinlife terminal CA")
        self.rogue = trustme.CA(organization_name="someone else")
        self.server_cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
        self.server_cert.private_key_pem.write_to_path(str(tmp_path / "server-key.pem"))
        self.ca.cert_pem.write_to_path(str(tmp_path / "terminal-ca.pem"))

    def credentials(self, common_name: str, ca: trustme.CA | None = None, **kwargs) -> grpc.ChannelCredentials:
        san = common_name.replace("_", "-") + ".terminals.example"  # DNS names allow no "_"
        leaf = (ca or self.ca).issue_cert(san, common_name=common_name, **kwargs)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem.bytes(),
            private_key=leaf.private_key_pem.bytes(),
            certificate_chain=b"".join(b.bytes() for b in leaf.cert_chain_pems),
        )

    def access_file(self, throttle: str = "") -> str:
        terminals = "\n".join(
            f'[terminals.{r.value}-01]\nrole = "{r.value}"\n' + (f'office = "{OFFICE}"\n' if r in COUNTERS else "") for r in ROLES
        )
        text = f"""
[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "terminal-ca.pem"

{throttle}

{terminals}
[terminals.revoked-01]
role = "medical_reader"
revoked = true
"""
        path = self.dir / "access.toml"
        path.write_text(text)
        return path


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def start(db_url, keys, pki, throttle: str = "") -> ThreadedServer:
    """A server with mutual TLS; every role's terminal calls every RPC in
    quick succession, so without request-rate limits (tests/e2e/test_rate_limit.py)."""
    path = pki.access_file(throttle)
    return ThreadedServer(db_url, keys, clock=OPEN_HOURS, access=load_access_config(path), access_file=path, rates=NO_RATE_LIMITS)


@pytest.fixture
def tls_server(db_url, keys, pki):
    srv = start(db_url, keys, pki)
    yield srv
    srv.close()


def client_for(server, pki, name: str, **kwargs) -> Client:
    return Client(server.target, credentials=pki.credentials(name, **kwargs))


def test_every_role_against_every_rpc(tls_server, pki):
    counter = client_for(tls_server, pki, "ward_office-01")
    counter.enroll("card-T1", {USER: "4821", SIGNATURE: "ABC123"})
    assert set(CALLS) == set(RPC_ROLES), "every RPC of the role table is exercised"
    # the kiosk's call completes a reservation; the reset app's role comes later in ROLES
    app = client_for(tls_server, pki, "smartphone_app-01")
    CALLS["/pinlife.v1.PinService/ReserveStoreReset"](app)
    app.close()
    for role in ROLES:
        client = client_for(tls_server, pki, f"{role.value}-01")
        refused_before = False  # the server's clock is fixed: one refusal window per terminal
        for rpc, call in CALLS.items():
            allowed = role in RPC_ROLES[rpc]
            before = len(tls_server.store.log.stream(terminal_stream(f"{role.value}-01")))
            try:
                call(client)
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
            if allowed:
                assert code == grpc.StatusCode.OK, (role, rpc, code)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (role, rpc, code)
                denied = tls_server.store.log.stream(terminal_stream(f"{role.value}-01"))
                if refused_before:  # aggregated: counted, recorded with the terminal's next window
                    assert len(denied) == before
                    continue
                refused_before = True
                assert len(denied) == before + 1
                assert denied[-1].event_type == "AccessDenied"
                assert denied[-1].payload["rpc"] == rpc and denied[-1].terminal_id == f"{role.value}-01"
                assert denied[-1].channel == role.value and denied[-1].payload["repeated"] == 0
        client.close()
    # Events carry the terminal and its role as the channel.
    verifies = [e for e in tls_server.store.log.stream("card-T1") if e.event_type == "PinVerified"]
    assert {(e.terminal_id, e.channel) for e in verifies} >= {("medical_reader-01", "medical_reader")}
    assert tls_server.store.integrity.first_broken_link(INTEGRITY) is None
    assert tls_server.store.cards.projection() == tls_server.store.cards.rebuild()
    counter.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # the TLS layer decides, before any store
def test_unregistered_and_revoked_terminals_are_unauthenticated(tls_server, pki):
    for name in ("stranger-01", "revoked-01"):
        client = client_for(tls_server, pki, name)
        with pytest.raises(grpc.RpcError) as err:
            CALLS["/pinlife.v1.PinService/GetPinStatus"](client)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        client.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ca": "rogue"},
        {"not_before": dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "not_after": dt.datetime(2020, 2, 1, tzinfo=dt.UTC)},
    ],
    ids=["unknown-ca", "expired"],
)
@pytest.mark.parametrize("backend", ["sqlite"])  # the TLS layer decides, before any store
def test_bad_certificates_fail_the_handshake_and_the_server_stays_up(tls_server, pki, kwargs):
    if kwargs.get("ca") == "rogue":
        kwargs = {"ca": pki.rogue}
    bad = client_for(tls_server, pki, "medical_reader-01", **kwargs)
    with pytest.raises(grpc.RpcError) as err:
        CALLS["/pinlife.v1.PinService/GetPinStatus"](bad)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake was refused
    bad.close()
    good = client_for(tls_server, pki, "auditor-01")
    with pytest.raises(grpc.RpcError) as err:
        CALLS["/pinlife.v1.PinService/GetPinStatus"](good)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # authenticated and authorized; no such card
    good.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # the TLS layer decides, before any store
def test_no_client_certificate_is_refused(tls_server, pki):
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem.bytes())
    client = Client(tls_server.target, credentials=creds)
    with pytest.raises(grpc.RpcError) as err:
        CALLS["/pinlife.v1.PinService/GetPinStatus"](client)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    client.close()


# --- one unambiguous identity ------------------------------------------------
def leaf_credentials(pki, common_names: list[str]) -> grpc.ChannelCredentials:
    """A client certificate of the terminal CA whose subject has these common
    names (trustme makes one at most), made with the CA's own key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pinlife terminals")]
        + [x509.NameAttribute(NameOID.COMMON_NAME, name) for name in common_names]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem.bytes(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )


@pytest.mark.parametrize(
    "names",
    [["auditor-01", "medical_reader-01"], ["medical_reader-01", "auditor-01"], ["auditor-01", "auditor-01"], []],
    ids=["two-registered", "two-other-order", "the-same-twice", "none"],
)
@pytest.mark.parametrize("backend", ["sqlite"])  # identified before any store is read
def test_a_certificate_without_exactly_one_common_name_is_unauthenticated(tls_server, pki, names):
    """Two common names name two terminals (it authenticated as the first);
    none names no terminal."""
    client = Client(tls_server.target, credentials=leaf_credentials(pki, names))
    with pytest.raises(grpc.RpcError) as err:
        CALLS["/pinlife.v1.PinService/GetPinStatus"](client)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "exactly one common name" in err.value.details()
    client.close()
    # the same CA's certificate with one common name is a terminal
    one = Client(tls_server.target, credentials=leaf_credentials(pki, ["auditor-01"]))
    with pytest.raises(grpc.RpcError) as err:
        CALLS["/pinlife.v1.PinService/GetPinStatus"](one)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # authenticated and authorized; no such card
    one.close()


# --- development mode: the terminal's own headers, as a real channel carries them ---
# (every malformed value: tests/unit/test_api_access.py)
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("header, value", [("x-pinlife-terminal", "reader 07")], ids=["space"])
def test_development_mode_refuses_a_malformed_terminal_header(server, header, value):
    """It was ignored: the call ran as dev-terminal (or as no counter)."""
    client = Client(server.target)
    client.metadata = [(header, value)]
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == f"{header} must be 1 to 64 of A-Z a-z 0-9 . _ -"
    assert server.store.log.stream(terminal_stream("dev-terminal")) == []
    client.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_development_mode_refuses_a_terminal_header_given_twice(server):
    client = Client(server.target)
    client.metadata = [("x-pinlife-terminal", "reader-07"), ("x-pinlife-terminal", "reader-08")]
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "x-pinlife-terminal is given twice"
    client.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_development_mode_takes_well_formed_headers(db_url, keys):
    """x-pinlife-office makes a development caller a counter of that office:
    its hours apply (docs/operations.md)."""
    night = ServiceClock(fixed=CALLS_AT.replace(hour=18))  # 03:00 in Tokyo
    for clock, code in ((OPEN_HOURS, grpc.StatusCode.NOT_FOUND), (night, grpc.StatusCode.FAILED_PRECONDITION)):
        server = ThreadedServer(db_url, keys, clock=clock)
        client = Client(server.target, terminal="reader-07", office=OFFICE, chain="seven")
        try:
            with pytest.raises(grpc.RpcError) as err:
                client.status("card-D1")
            assert err.value.code() == code, err.value.details()
        finally:
            client.close()
            server.close()


def test_a_counter_certificate_acts_only_in_its_office_hours_and_wards_whatever_it_calls(db_url, keys, pki):
    """DESIGN §5, over mutual TLS on each store: at 3 a.m. a ward-office
    certificate verifies, changes, reads and enrolls nothing (and spends no
    try); another office's counter is refused for a naka card and each such
    probe counts toward its throttle; an enrolment's ward must be one an
    office serves."""
    clock = FakeClock(CALLS_AT)  # a Tuesday, 10:00 in Tokyo
    other = '[throttle]\nmax_distinct_cards = 1\n\n[terminals.tsurumi-01]\nrole = "ward_office"\noffice = "tsurumi-ward-office"\n'
    path = pki.access_file(other)
    server = ThreadedServer(db_url, keys, clock=clock, access=load_access_config(path), access_file=path)
    naka, tsurumi = client_for(server, pki, "ward_office-01"), client_for(server, pki, "tsurumi-01")
    reader = client_for(server, pki, "medical_reader-01")
    try:
        enroll_with_ward(naka, "card-N1", "naka")
        enroll_with_ward(naka, "card-N4", "naka")
        with pytest.raises(grpc.RpcError) as err:
            enroll_with_ward(naka, "card-N2", "atlantis")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ward" in field_violations(err.value)
        with pytest.raises(grpc.RpcError) as err:
            tsurumi.verify("card-N1", USER, "4821")
        assert [v.type for v in precondition_violations(err.value)] == ["OUT_OF_JURISDICTION"]
        assert "Naka Ward Office" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # a second card probed: over the throttle's bound of one card
            tsurumi.status("card-N4")
        assert [v.type for v in precondition_violations(err.value)] == ["OUT_OF_JURISDICTION"]
        with pytest.raises(grpc.RpcError) as err:
            tsurumi.status("card-N1")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        clock.now = CALLS_AT.replace(hour=18)  # 03:00 in Tokyo
        calls = {
            "VerifyPin": lambda: naka.verify("card-N1", USER, "0000"),
            "ChangePin": lambda: naka.change("card-N1", USER, "0000", "1111"),
            "GetPinStatus": lambda: naka.status("card-N1"),
            "EnrollCard": lambda: enroll_with_ward(naka, "card-N3", "naka"),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
            assert [v.type for v in precondition_violations(err.value)] == ["OUT_OF_HOURS"], name
            assert "next opens 2026-12-02 08:45" in err.value.details(), name
        stream = server.store.log.stream(terminal_stream("ward_office-01"))
        assert [(e.event_type, e.payload["rpc"], e.payload["reason"]) for e in stream] == [
            ("CounterOutOfService", name, "out_of_hours") for name in calls
        ]
        assert all(e.office == OFFICE for e in stream)
        assert [e.event_type for e in server.store.log.stream("card-N1")] == ["CardEnrolled"]  # no try spent
        assert reader.verify("card-N1", USER, "0000").check.remaining_tries == 2
        probes = server.store.log.stream(terminal_stream("tsurumi-01"))
        assert [e.event_type for e in probes] == ["CounterOutOfService", "CounterOutOfService", "TerminalThrottled"]
    finally:
        for c in (naka, tsurumi, reader):
            c.close()
        server.close()


def enroll_with_ward(client: Client, card_id: str, ward: str) -> None:
    req = cpb.EnrollCardRequest(
        request_id=str(uuid.uuid4()), card_id=card_id, ward=ward, pins=[cpb.InitialPin(pin_type=USER, pin="4821")]
    )
    client.counter.EnrollCard(req, timeout=10, metadata=client.metadata)
