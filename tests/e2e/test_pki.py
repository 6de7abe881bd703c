"""What `pinlife pki init` makes, used as the docs say: a real `pinlife
serve` process with the access file naming the files, called over mutual
TLS by Python gRPC (by each name its certificate has, without any name
override), by the CLI with the command `pki init` printed, by a strict TLS
client that, as Go (so grpcurl) does, ignores the common name, by grpcurl
itself when it is installed, and by the Node example. Then the CLI's line
when the server's certificate does not name the host called.

The files themselves (modes, extensions, a second run, --force):
tests/unit/test_pki.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pinlife.config.access import load_access_config
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2_grpc, pin_service_pb2_grpc
from tests.conftest import make_key_file
from tests.e2e.harness import ROOT, ThreadedServer, cli, free_port
from tests.e2e.test_node_client import NODE, NPM, check_answers, node_example, run_client  # noqa: F401 (a fixture)
from tests.rpc import USER, Calls

COUNTER, READER, AUDITOR = "naka-counter-01", "reader-0001", "audit-01"
ACCESS = f"""
[tls]
cert = "pki/server.pem"
key = "pki/server-key.pem"
client_ca = "pki/ca.pem"

[terminals.{COUNTER}]
role = "ward_office"
office = "naka-ward-office"

[terminals.{READER}]
role = "medical_reader"

[terminals.{AUDITOR}]
role = "auditor"
"""
OPEN = "start:2026-12-01T10:00:00+09:00"  # a Tuesday morning: the ward office's counter is open
GRPCURL = shutil.which("grpcurl")


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
    return {**base, "COLUMNS": "200", **(env or {})}


def pki_init(folder: Path, *args: str) -> str:
    done = cli("pki", "init", str(folder / "pki"), *args, env=environment())
    assert done.returncode == 0, done.stderr
    return done.stdout


def files(folder: Path, terminal: str) -> dict[str, Path]:
    pki = folder / "pki"
    return {"ca": pki / "ca.pem", "cert": pki / "terminals" / f"{terminal}.pem", "key": pki / "terminals" / f"{terminal}-key.pem"}


def credentials(folder: Path, terminal: str) -> grpc.ChannelCredentials:
    f = files(folder, terminal)
    return grpc.ssl_channel_credentials(f["ca"].read_bytes(), f["key"].read_bytes(), f["cert"].read_bytes())


class TlsClient(Calls):
    """The Python client as an integrator writes it: a secure channel to a
    name of the server, its certificate checked against that name (no
    override)."""

    def __init__(self, target: str, folder: Path, terminal: str):
        self.channel = grpc.secure_channel(target, credentials(folder, terminal))
        self.pins = pin_service_pb2_grpc.PinServiceStub(self.channel)
        self.counter = counter_service_pb2_grpc.CounterServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = []

    def serving(self) -> bool:
        try:
            return self.health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self.channel.close()


class Served:
    """`pinlife serve` with PINLIFE_ACCESS_FILE naming what `pki init` made."""

    def __init__(self, folder: Path, url: str, printed: str):
        self.folder, self.printed = folder, printed
        self.port = free_port()
        self.log_path = folder / "server.log"
        self.log = open(self.log_path, "wb")
        env = environment(
            {
                "PINLIFE_ENV": "test",
                "PINLIFE_DATABASE_URL": url,
                "PINLIFE_KEY_FILE": str(make_key_file(folder / "keys.json", {"k1": os.urandom(32)}, "k1")),
                "PINLIFE_LISTEN": f"127.0.0.1:{self.port}",
                "PINLIFE_ACCESS_FILE": str(folder / "access.toml"),
                "PINLIFE_CLOCK": OPEN,
                "PINLIFE_LOG_FORMAT": "json",
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pinlife.cli", "serve"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        probe = TlsClient(f"localhost:{self.port}", folder, READER)
        deadline = time.monotonic() + 30
        try:
            while not probe.serving():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")
                time.sleep(0.05)
        finally:
            probe.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.log.close()


@pytest.fixture(scope="module")
def served(module_databases, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    (folder / "access.toml").write_text(ACCESS)
    printed = pki_init(folder, "--access", str(folder / "access.toml"))
    server = Served(folder, module_databases.create("sqlite"), printed)
    yield server
    server.close()


def printed_command(served: Served, tool: str) -> list[str]:
    """The `pinlife ...` or `grpcurl ...` line `pki init` printed (for its first terminal, the counter), on this port."""
    line = next(line.strip() for line in served.printed.splitlines() if line.strip().startswith(f"{tool} "))
    return line.replace(":50051", f":{served.port}").split()


def test_the_server_starts_with_the_files_and_no_warning(served):
    log = served.log_path.read_text()
    assert '"mutual_tls"' in log and '"terminals":3' in log
    assert "the TLS private key" not in log  # no warning of its mode: what production requires (0600)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_python_grpc_calls_by_each_name_of_the_certificate(served, host):
    target = f"{host}:{served.port}"
    counter, reader = TlsClient(target, served.folder, COUNTER), TlsClient(target, served.folder, READER)
    try:
        card = f"card-pki-{host}"
        counter.enroll(card, {USER: "4821"})
        assert reader.verify(card, USER, "4821").check.result == pb.CHECK_RESULT_OK
        with pytest.raises(grpc.RpcError) as err:  # authenticated as the reader: its role, not the counter's
            reader.enroll(f"{card}-2", {USER: "4821"})
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        counter.close()
        reader.close()


def test_the_cli_calls_with_the_printed_command(served):
    command = printed_command(served, "pinlife")  # pinlife --server localhost:PORT --ca ... --cert COUNTER ... status CARD
    assert command[:2] == ["pinlife", "--server"] and command[-2:] == ["status", "CARD"]
    options = command[1:-2]
    done = cli(*options, "enroll", "card-pki-cli", "--pin", "user_certificate=4821", env=environment())
    assert done.returncode == 0, done.stderr
    done = cli(*options, "status", "card-pki-cli", env=environment())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["card_id"] == "card-pki-cli"
    # another terminal, the same way: the auditor reads what the counter did
    auditor = [o.replace(f"/{COUNTER}", f"/{AUDITOR}") for o in options]
    done = cli("audit", "history", "card-pki-cli", "--format", "jsonl", *auditor, env=environment())
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event_type"], e["terminal_id"], e["channel"]) for e in events] == [("CardEnrolled", COUNTER, "ward_office")]


def strict_context(folder: Path, terminal: str) -> ssl.SSLContext:
    """A TLS client that checks the server's name as Go's crypto/x509 (so
    grpcurl) does: against the subjectAltNames only, never the common name."""
    f = files(folder, terminal)
    context = ssl.create_default_context(cafile=str(f["ca"]))
    context.hostname_checks_common_name = False
    context.load_cert_chain(str(f["cert"]), str(f["key"]))
    context.set_alpn_protocols(["h2"])
    return context


def handshake(context: ssl.SSLContext, port: int, name: str) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, context.wrap_socket(sock, server_hostname=name) as tls:
        return tls.selected_alpn_protocol()


def test_a_strict_client_that_ignores_the_common_name_accepts_the_server(served):
    context = strict_context(served.folder, READER)
    assert handshake(context, served.port, "localhost") == "h2"
    assert handshake(context, served.port, "127.0.0.1") == "h2"  # an IP subjectAltName
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|IP address mismatch"):
        handshake(context, served.port, "pinlife.invalid")


def test_the_strict_client_refuses_a_certificate_with_only_a_common_name(tmp_path):
    """The check above is as strict as claimed: a server certificate of the
    same CA with CN=localhost and no subjectAltName (the recipe the docs used
    to give) is refused by the same client, as grpcurl refused it."""
    pki_init(tmp_path, "--terminal", READER)
    ca_key = serialization.load_pem_private_key((tmp_path / "pki" / "ca-key.pem").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.pem").read_bytes())
    cert_file, key_file = cn_only_certificate(tmp_path, ca, ca_key, "localhost")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(cert_file), str(key_file))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            server_context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            handshake(strict_context(tmp_path, READER), port, "localhost")
    finally:
        thread.join(5)
        listener.close()


def cn_only_certificate(folder: Path, ca: x509.Certificate, ca_key, common_name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cn-only.pem", folder / "cn-only-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl is not installed here (the strict client above checks as it does)")
def test_grpcurl_with_the_printed_command(served):
    command = printed_command(served, "grpcurl")
    done = subprocess.run([GRPCURL, *command[1:]], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "pinlife.v1.PinService" in done.stdout.split()


@pytest.mark.skipif(NODE is None or NPM is None, reason="the Node.js example needs node and npm on PATH")
def test_the_node_example_over_what_pki_init_made(served, request):
    example = request.getfixturevalue("node_example")  # npm ci once per session, or skipped (tests/e2e/test_node_client.py)
    f = files(served.folder, COUNTER)
    env = {"PINLIFE_CA": str(f["ca"]), "PINLIFE_CERT": str(f["cert"]), "PINLIFE_CLIENT_KEY": str(f["key"])}
    check_answers(run_client(example, f"localhost:{served.port}", env=env))


# -- the CLI's line for a certificate that does not name the host -----------------------------
def threaded(folder: Path, db_url: str, keys) -> ThreadedServer:
    access = folder / "access.toml"
    return ThreadedServer(db_url, keys, access=load_access_config(access), access_file=access)


def pinlife(server: ThreadedServer, folder: Path, terminal: str, *args: str) -> subprocess.CompletedProcess:
    f = files(folder, terminal)
    tls = ["--ca", str(f["ca"]), "--cert", str(f["cert"]), "--key", str(f["key"])]
    return cli(*args, *tls, env=environment())


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_cli_says_which_names_the_certificate_has_and_what_to_pass(tmp_path, db_url, keys):
    (tmp_path / "access.toml").write_text(ACCESS)
    pki_init(tmp_path, "--access", str(tmp_path / "access.toml"), "--server-name", "pinlife.example")
    server = threaded(tmp_path, db_url, keys)
    port = server.server.port
    try:
        for host in ("127.0.0.1", "localhost"):
            done = pinlife(server, tmp_path, READER, "verify", "card-x", "user_certificate", "1234", "--server", f"{host}:{port}")
            assert done.returncode == 1 and done.stdout == ""
            assert done.stderr == (
                f"error: UNAVAILABLE: the server's certificate does not name {host} (--server); it names pinlife.example: "
                f"pass --server pinlife.example:{port} (if it reaches this server), or --server-name pinlife.example\n"
            )
        # what it says to pass works
        args = (
            "verify",
            "card-x",
            "user_certificate",
            "1234",
            "--server",
            f"127.0.0.1:{port}",
            "--server-name",
            "pinlife.example",
        )
        done = pinlife(server, tmp_path, READER, *args)
        assert done.returncode == 1 and done.stderr.startswith("error: NOT_FOUND"), done.stderr  # through TLS, authorized
        # the auditor's commands say the same, as their one line (exit 2)
        done = pinlife(
            server, tmp_path, AUDITOR, "audit", "stats", "--server", f"127.0.0.1:{port}", "--server-name", "wrong.example"
        )
        assert done.returncode == 2
        assert done.stderr == (
            "pinlife: UNAVAILABLE: the server's certificate does not name wrong.example (--server-name); it names "
            f"pinlife.example: pass --server pinlife.example:{port} (if it reaches this server), or --server-name pinlife.example\n"
        )
    finally:
        server.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_cli_on_a_certificate_without_subject_alt_names(tmp_path, db_url, keys):
    """The old recipe's server certificate (a common name only): the line says
    so, and --server-name with the common name gets through."""
    (tmp_path / "access.toml").write_text(ACCESS)
    pki_init(tmp_path, "--access", str(tmp_path / "access.toml"))
    pki = tmp_path / "pki"
    ca_key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    cert_file, key_file = cn_only_certificate(tmp_path, ca, ca_key, "pinlife-server")
    shutil.copyfile(cert_file, pki / "server.pem")
    shutil.copyfile(key_file, pki / "server-key.pem")
    server = threaded(tmp_path, db_url, keys)
    port = server.server.port
    try:
        done = pinlife(server, tmp_path, READER, "verify", "card-x", "user_certificate", "1234", "--server", f"127.0.0.1:{port}")
        assert done.returncode == 1
        assert done.stderr == (
            "error: UNAVAILABLE: the server's certificate has no subjectAltName, only the common name 'pinlife-server', "
            "which is not 127.0.0.1: pass --server-name pinlife-server; better, re-issue it with subjectAltNames "
            "(`pinlife pki init`, or docs/operations.md), as grpcurl and Go refuse it\n"
        )
        args = ("--server", f"127.0.0.1:{port}", "--server-name", "pinlife-server")
        done = pinlife(server, tmp_path, READER, "verify", "card-x", "user_certificate", "1234", *args)
        assert done.stderr.startswith("error: NOT_FOUND"), done.stderr
    finally:
        server.close()


# -- the docs' OpenSSL recipe, for a production CA -------------------------------------------
def docs_recipe() -> str:
    """The shell block of docs/operations.md that makes a CA, the server's and a terminal's certificates with OpenSSL."""
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index("# once: the CA (keep ca-key.pem offline)")
    return text[start : text.index("```", start)]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed here")
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_docs_openssl_recipe_makes_what_a_strict_client_and_the_server_accept(tmp_path, db_url, keys):
    done = subprocess.run(["sh", "-e"], input=docs_recipe(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "DNS:pinlife.example, DNS:localhost, IP Address:127.0.0.1" in done.stdout
    for key in ("ca-key.pem", "server-key.pem", "reader-0001-key.pem"):
        assert (tmp_path / key).stat().st_mode & 0o077 == 0, key
    (tmp_path / "access.toml").write_text(
        f'[tls]\ncert = "server.pem"\nkey = "server-key.pem"\nclient_ca = "ca.pem"\n\n[terminals.{READER}]\nrole = "medical_reader"\n'
    )
    terminal = tmp_path / "pki" / "terminals"  # where files() looks
    terminal.mkdir(parents=True)
    shutil.copyfile(tmp_path / "ca.pem", tmp_path / "pki" / "ca.pem")
    shutil.copyfile(tmp_path / f"{READER}.pem", terminal / f"{READER}.pem")
    shutil.copyfile(tmp_path / f"{READER}-key.pem", terminal / f"{READER}-key.pem")
    server = threaded(tmp_path, db_url, keys)
    port = server.server.port
    try:
        context = strict_context(tmp_path, READER)
        for name in ("pinlife.example", "localhost", "127.0.0.1"):
            assert handshake(context, port, name) == "h2"
        done = pinlife(server, tmp_path, READER, "verify", "card-x", "user_certificate", "1234", "--server", f"localhost:{port}")
        assert done.stderr.startswith("error: NOT_FOUND"), done.stderr  # through TLS, authorized
    finally:
        server.close()
