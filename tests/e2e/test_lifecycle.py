"""The server's life as an operator sees it, as a real process: SIGTERM
under load (health flips to NOT_SERVING, in-flight calls finish, every
acknowledged answer is in the log, no client sees an error other than
UNAVAILABLE, exit 0); start-up problems in one line, never a traceback; the
development-mode warning first."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import select

from pinlife.store.event_store import EventStore
from pinlife.store.tables import requests
from pinlife.v1 import common_pb2 as pb
from tests.conftest import make_key_file
from tests.e2e.harness import ROOT, Client, ProcessServer

USER = pb.PIN_TYPE_USER_CERTIFICATE
CLIENTS = 4


@pytest.mark.slow
def test_sigterm_under_load_flips_health_drains_and_loses_nothing(db_url, tmp_path):
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    # Its own process group, signalled as a supervisor does: the writer
    # process ignores the signal while the server drains.
    server = ProcessServer(db_url, key_file, tmp_path / "server.log", env={"PINLIFE_GRACE_SECONDS": "5"}, new_session=True)
    clients = [Client(server.target, f"reader-{i}") for i in range(CLIENTS)]
    for i, c in enumerate(clients):
        c.enroll(f"card-l{i}", {USER: "4821"})

    # Health, as a load balancer watches it.
    watcher = Client(server.target)
    statuses: list[tuple[float, int]] = []

    def watch_health() -> None:
        try:
            for r in watcher.health.Watch(health_pb2.HealthCheckRequest(), timeout=60):
                statuses.append((time.monotonic(), r.status))
        except grpc.RpcError:
            pass  # the server went away

    acknowledged: list[str] = []
    errors: list[tuple[float, grpc.StatusCode]] = []
    stop = threading.Event()

    def load(i: int) -> None:
        c = clients[i]
        while not stop.is_set():
            rid = str(uuid.uuid4())
            try:
                answer = c.verify(f"card-l{i}", USER, "4821", request_id=rid, timeout=10)
                assert answer.check.result == pb.CHECK_RESULT_OK
                acknowledged.append(rid)
            except grpc.RpcError as err:
                errors.append((time.monotonic(), err.code()))
                time.sleep(0.005)  # and on: calls keep arriving until the port closes

    threads = [threading.Thread(target=watch_health), *(threading.Thread(target=load, args=(i,)) for i in range(CLIENTS))]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while len(acknowledged) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 50, "the load did not get going"
        sent = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGTERM)
        status = server.proc.wait(30)
        time.sleep(0.5)  # clients see the closed port
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        for c in (*clients, watcher):
            c.close()
        server.log.close()

    assert status == 0
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "writer_process_died" not in log
    assert [s for _, s in statuses][:1] == [health_pb2.HealthCheckResponse.SERVING]
    flips = [t for t, s in statuses if s == health_pb2.HealthCheckResponse.NOT_SERVING]
    assert flips and flips[0] >= sent, statuses  # NOT_SERVING announced once the signal came
    assert errors, "the clients went on calling after the stop"
    # Refused while the server drains, and when the port closes with the
    # process: UNAVAILABLE only (never CANCELLED, as gRPC's own shutdown
    # answers a call it received but had not handed over).
    assert {code for _, code in errors} == {grpc.StatusCode.UNAVAILABLE}, errors
    assert all(t >= sent for t, _ in errors)  # no error before the signal
    store = EventStore(db_url)
    try:
        with store.reader.connect() as conn:
            stored = set(conn.execute(select(requests.c.request_id)).scalars())
    finally:
        store.close()
    assert set(acknowledged) <= stored  # every answer a client got is in the log


def serve(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
    return subprocess.run(
        [sys.executable, "-m", "pinlife.cli", "serve"],
        cwd=ROOT,
        env={**base, "PINLIFE_ENV": "test", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    out = (done.stdout + done.stderr).strip()
    assert "Traceback" not in out, out
    return out.splitlines()[-1]


@pytest.mark.parametrize("backend", ["sqlite"])  # the address, not the store: as on PostgreSQL
def test_a_port_in_use_is_one_line_and_exit_2(db_url, tmp_path):
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PINLIFE_DATABASE_URL": db_url,
            "PINLIFE_KEY_FILE": str(key_file),
            "PINLIFE_LOG_FORMAT": "json",
            "PINLIFE_WRITER": "thread",
        }
        line = json.loads(one_line(serve({**env, "PINLIFE_LISTEN": f"127.0.0.1:{port}"})))
        assert line["event"] == "refusing_to_start"
        assert line["message"].startswith(f"cannot listen on 127.0.0.1:{port} (PINLIFE_LISTEN)")
        line = json.loads(
            one_line(serve({**env, "PINLIFE_LISTEN": "127.0.0.1:0", "PINLIFE_METRICS_LISTEN": f"127.0.0.1:{port}"}))
        )
        assert line["message"].startswith(f"cannot serve metrics on 127.0.0.1:{port} (PINLIFE_METRICS_LISTEN)")


@pytest.mark.parametrize(
    "config, expected",
    [
        ("missing", "pinlife: configuration: PINLIFE_CONFIG: {path} does not exist"),
        ("[server\n", "pinlife: configuration: PINLIFE_CONFIG: {path} is not valid TOML"),
        ('[store]\nbatch_max = "many"\n', "pinlife: configuration: PINLIFE_BATCH_MAX ([store] batch_max) must be an integer"),
    ],
)
def test_an_unreadable_or_invalid_configuration_is_one_line(tmp_path, config, expected):
    path = tmp_path / "pinlife.toml"
    if config != "missing":
        path.write_text(config)
    line = one_line(serve({"PINLIFE_CONFIG": str(path)}, timeout=30))
    assert line.startswith(expected.format(path=path)), line


@pytest.mark.parametrize("backend", ["sqlite"])  # said before the store is opened
def test_the_development_mode_warning_is_the_first_line(db_url, tmp_path):
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    log = tmp_path / "server.log"
    server = ProcessServer(db_url, key_file, log, env={"PINLIFE_ENV": "development", "PINLIFE_WRITER": "thread"})
    server.close()
    first = json.loads(log.read_text().splitlines()[0])
    assert first["event"] == "development_mode" and first["level"] == "warning", first
    assert "without an x-pinlife-terminal header is the one terminal dev-terminal, throttled as one" in first["message"]
