"""The Node.js example client (examples/node, @grpc/grpc-js loading protos/ as
they are) against a real server on SQLite: in plain text (development mode)
and over mutual TLS.

Skipped, with the reason, when node or npm is not on PATH, or when `npm ci`
cannot reach the registry; any other install failure fails. The install runs
once per test session (under pytest-xdist: once for all workers, behind a
file lock), into examples/node/node_modules (not committed), unless what npm
installed there last is what package-lock.json says.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
import trustme

from pinlife.config.access import load_access_config
from pinlife.runtime.clock import ServiceClock
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import ROOT, Client, ThreadedServer

EXAMPLE = ROOT / "examples" / "node"
CARD = "card-node-0001"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason=f"the Node.js example needs node and npm on PATH (node: {NODE or 'missing'}, npm: {NPM or 'missing'})",
)

# npm's own words for a registry it cannot reach (DNS, refused, reset, timed
# out, no route, a gateway in between): the only install failures that skip.
UNREACHABLE = re.compile(
    r"\b(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ESOCKETTIMEDOUT|ERR_SOCKET_TIMEOUT|ENETUNREACH"
    r"|EHOSTUNREACH|ENETDOWN|ECONNABORTED|E502|E503|E504)\b|^npm (?:ERR!|error) network ",
    re.MULTILINE,
)
# A Tuesday, 10:00 in Tokyo: a counter terminal (mutual TLS) may enroll.
OPEN_HOURS = ServiceClock(fixed=dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC))


def installed() -> bool:
    """node_modules holds what package-lock.json says: npm's record of what it
    installed (node_modules/.package-lock.json) lists the same packages."""
    try:
        wanted = json.loads((EXAMPLE / "package-lock.json").read_text())["packages"]
        done = json.loads((EXAMPLE / "node_modules" / ".package-lock.json").read_text())["packages"]
    except (OSError, ValueError, KeyError):
        return False
    return {k: v for k, v in wanted.items() if k} == done


def npm_install() -> None:
    if installed():
        return
    locked = (EXAMPLE / "package-lock.json").exists()
    cmd = [NPM, "ci" if locked else "install", "--no-audit", "--no-fund", "--fetch-timeout=60000", "--fetch-retries=1"]
    try:
        done = subprocess.run(
            cmd,
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"`{' '.join(cmd[:2])}` in examples/node took over 240 s (is the npm registry reachable?)")
    if done.returncode == 0:
        return
    output = done.stdout + done.stderr
    found = UNREACHABLE.search(output)
    if found:
        pytest.skip(f"`npm {cmd[1]}` cannot reach the npm registry ({found.group(0).strip()}): examples/node not installed")
    pytest.fail(f"`npm {cmd[1]}` in examples/node failed (exit {done.returncode}):\n{output[-4000:]}", pytrace=False)


@pytest.fixture(scope="session")
def node_example(tmp_path_factory) -> Path:
    """examples/node with its dependencies installed, once per session: the
    first worker installs, the others wait on the lock and find it done."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the whole session's directory
    with open(shared / "npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = shared / "npm-install.done"
        if marker.exists():
            outcome = marker.read_text()
            if outcome.startswith("skip:"):
                pytest.skip(outcome.removeprefix("skip:"))
            if outcome.startswith("fail:"):
                pytest.fail(outcome.removeprefix("fail:"), pytrace=False)
            return EXAMPLE
        try:
            npm_install()
        except pytest.skip.Exception as exc:
            marker.write_text(f"skip:{exc.msg}")
            raise
        except pytest.fail.Exception as exc:
            marker.write_text(f"fail:{exc.msg}")
            raise
        marker.write_text("ok")
    return EXAMPLE


def run_client(example: Path, target: str, env: dict[str, str] | None = None) -> list[dict]:
    # Only what the test gives: not a developer's PINLIFE_LISTEN or TLS files.
    base = {
        k: v for k, v in os.environ.items() if k not in ("PINLIFE_LISTEN", "PINLIFE_CA", "PINLIFE_CERT", "PINLIFE_CLIENT_KEY")
    }
    done = subprocess.run(
        [NODE, str(example / "client.js"), target, CARD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 4, done.stdout
    return lines


def check_answers(lines: list[dict]) -> None:
    enrolled, wrong, right, status = lines
    assert enrolled["card_id"] == CARD and not enrolled["replayed"]
    assert enrolled["stream_version"] == "1"  # uint64 as a string (longs: String)
    assert {p["pin_type"]: (p["status"], p["remaining_tries"]) for p in enrolled["pins"]} == {
        "PIN_TYPE_USER_CERTIFICATE": ("PIN_STATUS_ACTIVE", 3),
        "PIN_TYPE_SIGNATURE": ("PIN_STATUS_ACTIVE", 5),
    }
    assert wrong["check"]["result"] == "CHECK_RESULT_WRONG_PIN"
    assert (wrong["check"]["remaining_tries"], wrong["check"]["retry_limit"]) == (2, 3)
    assert not wrong["check"]["final_try"] and not wrong["check"]["locked_now"] and not wrong["replayed"]
    assert right["check"]["result"] == "CHECK_RESULT_OK" and right["check"]["remaining_tries"] == 3
    assert status["card_id"] == CARD and status["card_status"] == "CARD_STATUS_ACTIVE"
    assert status["stream_version"] == "3"
    user = next(p for p in status["pins"] if p["pin_type"] == "PIN_TYPE_USER_CERTIFICATE")
    assert user["status"] == "PIN_STATUS_ACTIVE"
    assert (user["consecutive_failures"], user["remaining_tries"], user["retry_limit"]) == (0, 3, 3)
    assert user["last_version"] == "3" and user["locked_at"] is None  # defaults: an unset message is null


def check_store(server: ThreadedServer, client: Client, terminal: str, channel: str) -> None:
    """The calls really were recorded: the card's stream in the store, and its
    state read back by the Python client."""
    stream = server.store.log.stream(CARD)
    assert [e.event_type for e in stream] == ["CardEnrolled", "PinVerificationFailed", "PinVerified"]
    assert {(e.terminal_id, e.channel) for e in stream} == {(terminal, channel)}
    assert [e.pin_type for e in stream[1:]] == ["user_certificate", "user_certificate"]
    assert len({e.request_id for e in stream}) == 3  # a fresh request id per call
    status = client.status(CARD)
    assert status.card_status == pb.CARD_STATUS_ACTIVE and status.stream_version == 3
    user = next(p for p in status.pins if p.pin_type == pb.PIN_TYPE_USER_CERTIFICATE)
    assert (user.status, user.consecutive_failures, user.remaining_tries) == (pb.PIN_STATUS_ACTIVE, 0, 3)


@pytest.mark.parametrize("backend", ["sqlite"])  # the client and the channel: the stores are tested without it
def test_the_node_client_enrolls_verifies_and_reads_the_status(node_example, server):  # server: tests/e2e/conftest.py
    check_answers(run_client(node_example, server.target))
    client = Client(server.target)
    try:
        check_store(server, client, terminal="node-example", channel="development")
    finally:
        client.close()


class Pki:
    """A terminal CA, the server's certificate, and one counter terminal's
    certificate and key as PEM files (as PINLIFE_CA, PINLIFE_CERT,
    PINLIFE_CLIENT_KEY name them)."""

    TERMINAL = "node-counter-01"

    def __init__(self, path: Path):
        self.path = path
        self.ca = trustme.CA(organization_name="pinlife terminal CA")
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        server.private_key_and_cert_chain_pem.write_to_path(str(path / "server.pem"))
        server.private_key_pem.write_to_path(str(path / "server-key.pem"))
        self.ca.cert_pem.write_to_path(str(path / "ca.pem"))
        self.leaf = self.ca.issue_cert(f"{self.TERMINAL}.terminals.example", common_name=self.TERMINAL)
        (path / "terminal.pem").write_bytes(b"".join(b.bytes() for b in self.leaf.cert_chain_pems))
        self.leaf.private_key_pem.write_to_path(str(path / "terminal-key.pem"))
        self.access_file = path / "access.toml"
        self.access_file.write_text(f"""
[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"

[terminals.{self.TERMINAL}]
role = "ward_office"
office = "naka-ward-office"
""")

    def env(self) -> dict[str, str]:
        files = {"PINLIFE_CA": "ca.pem", "PINLIFE_CERT": "terminal.pem", "PINLIFE_CLIENT_KEY": "terminal-key.pem"}
        return {name: str(self.path / file) for name, file in files.items()}

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem.bytes(),
            private_key=self.leaf.private_key_pem.bytes(),
            certificate_chain=(self.path / "terminal.pem").read_bytes(),
        )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_node_client_over_mutual_tls(node_example, db_url, keys, tmp_path):
    pki = Pki(tmp_path)
    srv = ThreadedServer(db_url, keys, clock=OPEN_HOURS, access=load_access_config(pki.access_file), access_file=pki.access_file)
    try:
        check_answers(run_client(node_example, srv.target, env=pki.env()))
        client = Client(srv.target, credentials=pki.credentials())
        try:
            check_store(srv, client, terminal=Pki.TERMINAL, channel="ward_office")
        finally:
            client.close()
    finally:
        srv.close()
