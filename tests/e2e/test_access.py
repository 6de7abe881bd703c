"""Mutual TLS, roles per RPC, refusals recorded, terminal throttling, over a
real TLS channel on SQLite and PostgreSQL. Certificates come from trustme."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
import trustme
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from google.protobuf.timestamp_pb2 import Timestamp

from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from pinlife.v1 import store_service_pb2 as spb
from service.config.access import load_access_config
from service.runtime.clock import ServiceClock
from service.domain.access import COUNTERS, RPC_ROLES, Role
from service.domain.streams import terminal_stream
from tests.e2e.harness import Client, ThreadedServer
from tests.keys import INTEGRITY

ROLES = [r for r in Role if r is not Role.DEVELOPMENT]
USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGNATURE = pb.PIN_TYPE_SIGNATURE
OFFICE = "naka-ward-office"  # of the shipped Yokohama calendar
# A Tuesday, 10:00 in Tokyo: the ward office and the store kiosks are open.
OPEN_HOURS = ServiceClock(fixed=dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC))
HOLDER_CARD = [pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)]


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
    path = pki.access_file(throttle)
    return ThreadedServer(db_url, keys, clock=OPEN_HOURS, access=load_access_config(path), access_file=path)


@pytest.fixture
def tls_server(db_url, keys, pki):
    srv = start(db_url, keys, pki)
    yield srv
    srv.close()


def client_for(server, pki, name: str, **kwargs) -> Client:
    return Client(server.target, credentials=pki.credentials(name, **kwargs))


CALLS = {
    "/pinlife.v1.PinService/VerifyPin": lambda c: c.pins.VerifyPin(
        ppb.VerifyPinRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, pin="4821"), timeout=10
    ),
    "/pinlife.v1.PinService/ChangePin": lambda c: c.pins.ChangePin(
        ppb.ChangePinRequest(
            request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, current_pin="4821", new_pin="4821"
        ),
        timeout=10,
    ),
    "/pinlife.v1.PinService/GetPinStatus": lambda c: c.pins.GetPinStatus(
        ppb.GetPinStatusRequest(card_id="card-T1"), timeout=10
    ),
    "/pinlife.v1.CounterService/EnrollCard": lambda c: c.counter.EnrollCard(
        cpb.EnrollCardRequest(
            request_id=str(uuid.uuid4()), card_id=f"card-{uuid.uuid4().hex[:8]}", pins=[cpb.InitialPin(pin_type=USER, pin="1234")]
        ),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/ResetPin": lambda c: c.counter.ResetPin(
        cpb.ResetPinRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, new_pin="4821",
                            applicant=pb.APPLICANT_HOLDER, documents=HOLDER_CARD), timeout=10,
    ),
    "/pinlife.v1.CounterService/UnlockPin": lambda c: c.counter.UnlockPin(
        cpb.UnlockPinRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER,
                             applicant=pb.APPLICANT_HOLDER, documents=HOLDER_CARD), timeout=10,
    ),
    "/pinlife.v1.CounterService/RequestProxyReset": lambda c: c.counter.RequestProxyReset(
        cpb.RequestProxyResetRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER,
                                     documents=[*HOLDER_CARD, pb.Document(type=pb.DOCUMENT_TYPE_OTHER_ID)]), timeout=10,
    ),
    "/pinlife.v1.CounterService/CompleteProxyReset": lambda c: c.counter.CompleteProxyReset(
        cpb.CompleteProxyResetRequest(
            request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=USER, inquiry_id="not-an-open-inquiry",
            code="12345678", new_pin="4821",
            documents=[*HOLDER_CARD, *(pb.Document(type=t) for t in (pb.DOCUMENT_TYPE_INQUIRY_FORM,
                       pb.DOCUMENT_TYPE_POWER_OF_ATTORNEY, pb.DOCUMENT_TYPE_PUBLIC_PHOTO_ID))],
        ), timeout=10,
    ),
    "/pinlife.v1.CounterService/SuspendCard": lambda c: c.counter.SuspendCard(
        cpb.SuspendCardRequest(request_id=str(uuid.uuid4()), card_id="card-T1", reason=cpb.SUSPENSION_REASON_LOST),
        timeout=10,
    ),
    "/pinlife.v1.CounterService/ResumeCard": lambda c: c.counter.ResumeCard(
        cpb.ResumeCardRequest(request_id=str(uuid.uuid4()), card_id="card-T1", applicant=pb.APPLICANT_HOLDER,
                              documents=HOLDER_CARD), timeout=10,
    ),
    "/pinlife.v1.PinService/ReserveStoreReset": lambda c: c.pins.ReserveStoreReset(
        ppb.ReserveStoreResetRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=SIGNATURE,
                                     proving_pin="4821"), timeout=10,
    ),
    "/pinlife.v1.ConvenienceStoreService/ResetPin": lambda c: c.store.ResetPin(
        spb.StoreResetPinRequest(request_id=str(uuid.uuid4()), card_id="card-T1", pin_type=SIGNATURE,
                                 proving_pin="4821", new_pin="NEW123"), timeout=10,
    ),
    "/pinlife.v1.AuditService/GetCardHistory": lambda c: c.audit.GetCardHistory(
        apb.GetCardHistoryRequest(card_id="card-T1"), timeout=10),
    "/pinlife.v1.AuditService/QueryEvents": lambda c: c.audit.QueryEvents(apb.QueryEventsRequest(page_size=5), timeout=10),
    "/pinlife.v1.AuditService/WatchEvents": lambda c: _first(c.audit.WatchEvents(apb.WatchEventsRequest(), timeout=10)),
    "/pinlife.v1.AuditService/VerifyIntegrity": lambda c: list(
        c.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-T1"), timeout=30)),
    "/pinlife.v1.AuditService/GetCheckpoint": lambda c: _checkpoint(c),
    "/pinlife.v1.AuditService/GetStatistics": lambda c: c.audit.GetStatistics(
        apb.GetStatisticsRequest(**{"from": _ts(OPEN_HOURS() - dt.timedelta(hours=1)), "to": _ts(OPEN_HOURS() + dt.timedelta(hours=1))}),
        timeout=10),
}  # fmt: skip


def _ts(at: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _first(stream):
    try:
        return next(stream)
    finally:
        stream.cancel()


def _checkpoint(c):
    try:
        return c.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:  # allowed, nothing signed yet
            raise
        return None


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


def test_medical_reader_only_verifies_and_auditor_only_reads(tls_server, pki):
    assert RPC_ROLES["/pinlife.v1.PinService/VerifyPin"] >= {Role.MEDICAL_READER}
    assert {rpc for rpc, roles in RPC_ROLES.items() if Role.MEDICAL_READER in roles} == {"/pinlife.v1.PinService/VerifyPin"}
    audit = {rpc for rpc in RPC_ROLES if rpc.startswith("/pinlife.v1.AuditService/")}
    assert len(audit) == 6 and all(RPC_ROLES[rpc] == {Role.AUDITOR} for rpc in audit)
    assert {rpc for rpc, roles in RPC_ROLES.items() if Role.AUDITOR in roles} == {"/pinlife.v1.PinService/GetPinStatus", *audit}


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


def test_no_client_certificate_is_refused(tls_server, pki):
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem.bytes())
    client = Client(tls_server.target, credentials=creds)
    with pytest.raises(grpc.RpcError) as err:
        CALLS["/pinlife.v1.PinService/GetPinStatus"](client)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    client.close()


def test_a_terminal_failing_on_many_cards_is_throttled_and_recorded(db_url, keys, pki):
    server = start(db_url, keys, pki, "[throttle]\nmax_distinct_cards = 3\nwindow_seconds = 60\npenalty_seconds = 30\n")
    counter = client_for(server, pki, "ward_office-01")
    reader = client_for(server, pki, "medical_reader-01")
    other = client_for(server, pki, "self_service-01")
    try:
        cards = [f"card-E{i}" for i in range(6)]
        for card in cards:
            counter.enroll(card, {USER: "4821"})
        for card in cards[:4]:  # failures on 4 distinct cards: more than 3
            assert reader.verify(card, USER, "0000").check.result == pb.CHECK_RESULT_WRONG_PIN
        with pytest.raises(grpc.RpcError) as err:
            reader.verify(cards[5], USER, "4821")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = [d for d in rpc_status.from_call(err.value).details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        info = error_details_pb2.RetryInfo()
        retry[0].Unpack(info)
        assert 1 <= info.retry_delay.seconds <= 30
        # Recorded, visible to auditors in the terminal's stream.
        (throttled,) = [
            e for e in server.store.log.stream(terminal_stream("medical_reader-01")) if e.event_type == "TerminalThrottled"
        ]
        assert throttled.payload["distinct_cards"] == 4
        # The refused attempt cost the holder nothing; the holders are not locked out.
        assert [e.event_type for e in server.store.log.stream(cards[5])] == ["CardEnrolled"]
        for card in cards[:4]:
            assert other.verify(card, USER, "4821").check.result == pb.CHECK_RESULT_OK
    finally:
        for c in (counter, reader, other):
            c.close()
        server.close()


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


# --- development mode: the terminal's own headers ---------------------------
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


def test_development_mode_refuses_a_terminal_header_given_twice(server):
    client = Client(server.target)
    client.metadata = [("x-pinlife-terminal", "reader-07"), ("x-pinlife-terminal", "reader-08")]
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "x-pinlife-terminal is given twice"
    client.close()


def test_development_mode_takes_well_formed_headers(server):
    client = Client(server.target, terminal="reader-07", office=OFFICE, chain="seven")
    with pytest.raises(grpc.RpcError) as err:
        client.status("card-D1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    client.close()
