"""`pinlife audit` (service/cli/audit.py) as an auditor runs it, against a
real server (SQLite; the server side is tested on both stores in
test_audit.py), in development mode and over mutual TLS. What it prints
(jsonl, csv, table), what it exits with (0 done or intact, 1 a problem
found, 2 could not run), and that every failure is one line on stderr.

The command runs in this process (harness.cli: its output, exit code and
environment as a process's); where only a process shows it (gRPC's own
logging kept off stderr, the exit code of the interpreter), in its own
(harness.cli_process)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import queue
import re
import subprocess
import threading

import pytest

from pinlife.cli import audit as audit_cli
from pinlife.config.settings import Settings
from pinlife.runtime.clock import ServiceClock
from pinlife.store import checkpoints
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer, cli, cli_process, free_port
from tests.e2e.test_access import Pki, start

USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGNATURE = pb.PIN_TYPE_SIGNATURE
NOW = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.UTC)  # a Tuesday, 10:30 in Tokyo
EVENT_CSV = (
    "position,occurred_at,stream_id,stream_kind,version,event_type,pin_type,channel,terminal_id,office_id,outcome,"
    "request_id,event_id,schema_version,key_id,hash,prev_hash,payload"
)


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
    return {**base, "COLUMNS": "200", **(env or {})}


def pinlife(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return cli(*args, env=environment(env))


def pinlife_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return cli_process(*args, env=environment(env))


def one_line_error(done: subprocess.CompletedProcess, code: str) -> str:
    """Exit 2, nothing on stdout, and one line on stderr naming the code."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pinlife: {code}"), done.stderr
    return lines[0]


def jsonl(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def server(databases, keys):
    srv = ThreadedServer(databases.create("sqlite"), keys, clock=ServiceClock(fixed=NOW))
    yield srv
    srv.close()


@pytest.fixture
def audit(server, tmp_path):
    """`pinlife audit ...` against the server (development mode: the CLI's
    terminal may call AuditService), its kept checkpoints in tmp_path."""
    kept = {"PINLIFE_AUDIT_CHECKPOINTS": str(tmp_path / "kept.jsonl")}
    return lambda *args, env=None: pinlife("audit", *args, "--server", server.target, env={**kept, **(env or {})})


@pytest.fixture
def history(server):
    """card-1: enrolled, three wrong user PINs (locked), a try while locked; card-2 from another reader."""
    reader = Client(server.target, terminal="reader-01")
    reader.enroll("card-1", {USER: "4821", SIGNATURE: "ABC123"})
    for _ in range(3):
        reader.verify("card-1", USER, "0000")
    reader.verify("card-1", USER, "4821")
    reader.close()
    other = Client(server.target, terminal="reader-02")
    other.enroll("card-2", {USER: "1111"})
    other.verify("card-2", USER, "0000")
    other.close()


def test_history_in_every_format_and_queries(server, audit, history):
    events = jsonl(audit("history", "card-1"))  # stdout is a pipe: jsonl
    assert [e["event_type"] for e in events] == [
        "CardEnrolled",
        "PinVerificationFailed",
        "PinVerificationFailed",
        "PinVerificationFailed",
        "PinLocked",
        "LockedPinAttempted",
    ]
    assert [int(e["version"]) for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(len(e["hash"]) == 64 for e in events)
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in zip(events, events[1:]))
    first_fail = events[1]
    assert first_fail["payload"] == {"purpose": "verify", "consecutive_failures": 1, "remaining_tries": 2}
    assert (first_fail["pin_type"], first_fail["outcome"], first_fail["terminal_id"]) == (
        "PIN_TYPE_USER_CERTIFICATE",
        "EVENT_OUTCOME_FAILURE",
        "reader-01",
    )
    assert first_fail["occurred_at"] == "2026-12-01T01:30:00Z" and first_fail["key_id"] and first_fail["event_id"]

    newest = jsonl(audit("history", "card-1", "--newest-first", "--limit", "2"))
    assert [int(e["version"]) for e in newest] == [6, 5]
    failures = jsonl(audit("history", "card-1", "--outcome", "failure", "--event-type", "PinVerificationFailed,PinLocked"))
    assert [int(e["version"]) for e in failures] == [2, 3, 4]

    done = audit("history", "card-1", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert done.stdout.splitlines()[0] == EVENT_CSV
    assert [r["version"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[4]["event_type"] == "PinLocked" and rows[4]["outcome"] == "locked" and rows[4]["pin_type"] == "user_certificate"
    assert rows[1]["occurred_at"] == "2026-12-01T10:30:00+09:00"  # Asia/Tokyo
    assert json.loads(rows[4]["payload"]) == {"consecutive_failures": 3}
    assert rows[2]["prev_hash"] == rows[1]["hash"]

    locks = jsonl(audit("query", "--event-type", "PinLocked"))
    assert [(e["stream_id"], e["event_type"]) for e in locks] == [("card-1", "PinLocked")]
    mine = jsonl(audit("query", "--terminal", "reader-02", "--streams", "cards", "--from", "2026-12-01", "--to", "now"))
    assert [(e["stream_id"], e["event_type"]) for e in mine] == [("card-2", "CardEnrolled"), ("card-2", "PinVerificationFailed")]
    # The audit of the auditors: each page read above is an AuditRead on the CLI's own terminal stream.
    reads = jsonl(audit("query", "--streams", "terminals", "--event-type", "AuditRead", "--terminal", "cli"))
    assert [e["payload"]["rpc"] for e in reads][:2] == ["GetCardHistory", "GetCardHistory"]
    assert all(e["stream_id"] == "terminal:cli" for e in reads)

    table = audit("query", "--format", "table", "--type", "user_certificate", "--outcome", "lock")
    assert table.returncode == 0, table.stderr
    assert "occurred at (JST)" in table.stdout and "2026-12-01 10:30:00" in table.stdout
    assert "PinLocked" in table.stdout and "LockedPinAttempted" in table.stdout and "2 events" in table.stdout
    assert "PinVerificationFailed" not in table.stdout


def test_watch_gives_stored_events_in_position_order_after_a_position(server, audit, history):
    head = server.store.log.head_position()
    watched = jsonl(audit("watch", "--after", "3", "--limit", str(head - 3)))
    assert [int(e["position"]) for e in watched] == list(range(4, head + 1))


def test_watch_says_where_it_starts_and_the_columns_a_narrow_terminal_leaves_out(server, audit, history):
    done = audit("watch", "--format", "table", "--limit", "2", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    said = done.stderr.splitlines()
    assert said[0].startswith(f"pinlife: watching {server.target}: the events after position 0")
    assert "not shown at 80 columns: PIN, channel, terminal, office, details" in said[0]
    header, *lines = done.stdout.splitlines()
    assert header.split() == ["pos", "occurred", "at", "(JST)", "type", "card", "outcome"]
    assert len(lines) == 2 and lines[0].split()[:5] == ["#1", "2026-12-01", "10:30:00", "CardEnrolled", "card-1"]
    assert all(len(line) <= 80 for line in done.stdout.splitlines())

    wide = audit("watch", "--format", "table", "--after", "1", "--limit", "1", env={"COLUMNS": "200"})
    assert "not shown" not in wide.stderr and wide.stdout.splitlines()[0].split()[-3:] == ["office", "outcome", "details"]
    assert "reader-01" in wide.stdout and "consecutive_failures=1" in wide.stdout
    # Into a pipe (jsonl) the header is on stderr alone: stdout is the events.
    piped = audit("watch", "--limit", "1")
    assert piped.stderr.startswith("pinlife: watching") and [
        json.loads(line)["position"] for line in piped.stdout.splitlines()
    ] == ["1"]


def test_a_table_narrower_than_its_columns_says_which_it_left_out(audit, history):
    narrow = audit("history", "card-1", "--format", "table", env={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    text = " ".join(narrow.stdout.split())
    assert "not shown at 80 columns:" in text and "terminal" in text.split("not shown at 80 columns:")[1]
    assert "reader-01" not in narrow.stdout  # the terminal column, left out, and said so
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines())
    wide = audit("history", "card-1", "--format", "table", env={"COLUMNS": "200"})
    assert "reader-01" in wide.stdout and "not shown" not in wide.stdout


def test_watch_reconnects_with_exponential_backoff_and_jitter_resuming_after_the_last_position(
    databases, keys, tmp_path, monkeypatch
):
    """The server stops under a watch: one line per attempt, waits doubling
    from 0.5 s (the jitter's draw made 1: the whole ceiling), the next
    server's events from the position after the last one delivered, none
    twice; a wait starts from 0.5 s again once events flowed. A fake sleep:
    no wall-clock waits, and the test restarts the server from it."""
    url, port = databases.create("sqlite"), free_port()
    settings = Settings(env="test", database_url=url, listen=f"127.0.0.1:{port}", writer="thread")
    servers = [ThreadedServer(url, keys, settings=settings)]
    target = servers[0].target
    Client(target, terminal="reader-01").enroll("card-1", {USER: "4821"})

    delivered: queue.Queue[int] = queue.Queue()
    add = audit_cli.EventWriter.add

    def observed(self, events):
        events = list(events)
        add(self, events)
        for e in events:
            delivered.put(e.position)

    waits: list[float] = []
    restarted = threading.Event()

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # the server comes back during the third wait
            servers.append(ThreadedServer(url, keys, settings=settings))
            restarted.set()
        elif len(waits) == 4:
            raise KeyboardInterrupt  # the auditor's Ctrl-C

    monkeypatch.setattr(audit_cli.EventWriter, "add", observed)
    monkeypatch.setattr(audit_cli, "_sleep", sleep)
    monkeypatch.setattr(audit_cli, "_random", lambda: 1.0)
    result: list[subprocess.CompletedProcess] = []
    watcher = threading.Thread(target=lambda: result.append(pinlife("audit", "watch", "--server", target)))
    watcher.start()

    def until(position: int) -> None:
        while (got := delivered.get(timeout=30)) < position:
            pass
        assert got == position

    def stop(srv: ThreadedServer) -> None:
        if srv.loop.is_running():
            srv.close()

    try:
        until(2)  # card-1's enrolment, the watch's own AuditRead
        stop(servers[0])
        assert restarted.wait(30)
        Client(target, terminal="reader-01").enroll("card-2", {USER: "1111"})
        until(servers[1].store.log.head_position())
        stop(servers[1])
        watcher.join(30)
    finally:
        for srv in servers:
            stop(srv)
    (done,) = result
    assert done.returncode == 130, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    positions = [int(e["position"]) for e in events]
    assert positions == list(range(1, positions[-1] + 1))  # every position once, in order
    assert ("card-2", "CardEnrolled") in [(e["stream_id"], e["event_type"]) for e in events]

    assert waits == [0.5, 1.0, 2.0, 0.5]
    said = done.stderr.splitlines()
    assert said[0] == f"pinlife: watching {target}: the events after position 0, as they are written (Ctrl-C ends)"
    retries = [line for line in said if "retrying in" in line]
    assert [re.search(r"retrying in (\S+) s \(attempt (\d+)\)", line).groups() for line in retries] == [
        ("0.5", "1"),
        ("1.0", "2"),
        ("2.0", "3"),
        ("0.5", "1"),
    ]
    last_before = int(retries[0].rsplit(" ", 1)[1])
    assert all(line.startswith("pinlife: UNAVAILABLE") for line in retries)
    assert all(line.endswith(f"to resume after position {last_before}") for line in retries[:3])
    assert f"pinlife: watching again after position {last_before}" in said
    assert retries[3].endswith(f"to resume after position {positions[-1]}")


def test_statistics_as_json_and_csv(audit, history):
    window = ("--from", "2026-12-01T08:00", "--to", "2026-12-01T13:00")  # Asia/Tokyo
    (stats,) = jsonl(audit("stats", *window, "--top", "5"))
    assert (stats["total"]["checks"], stats["total"]["failures"], stats["total"]["locks"]) == ("5", "4", "1")
    assert [t["terminal_id"] for t in stats["most_distinct_card_failures"]] == ["reader-01", "reader-02"]
    assert len(stats["by_time"]) == 5 and stats["by_time"][2]["key"].startswith("2026-12-01T10:00:00+09:00")
    done = audit("stats", *window, "--granularity", "day", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows[0]["dimension"] == "total" and rows[0]["failures"] == "4"
    assert {r["key"] for r in rows if r["dimension"] == "terminal"} >= {"reader-01", "reader-02"}


def test_verify_and_checkpoints_then_a_tampered_event(server, audit, history, keys, tmp_path):
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    (report,) = jsonl(audit("verify"))  # it fetches the latest checkpoint first: one AuditRead more
    assert report["intact"] is True and report["problems"] == [] and int(report["events_checked"]) == 9
    one = audit("verify", "card-1", "--format", "table")
    assert one.returncode == 0 and "intact" in one.stdout

    saved = tmp_path / "checkpoint.note"
    done = audit("checkpoint", "--save", str(saved))  # the note itself, even into a pipe
    assert done.returncode == 0, done.stderr
    assert done.stdout == saved.read_text() and done.stdout.splitlines()[0] == "pinlife.test/log"
    assert "verifier key: " in done.stderr
    (compared,) = jsonl(audit("checkpoint", "--compare", str(saved), "--format", "jsonl"))
    assert compared["compared"]["held"] is True and compared["tree_size"] == done.stdout.splitlines()[1]
    assert audit("verify", "--checkpoint", str(saved)).returncode == 0

    # Someone with power over the database rewrites a wrong PIN into a right one.
    with server.store.writer.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_update")
        conn.exec_driver_sql(
            "UPDATE events SET event_type = 'PinVerified', payload = '{}' WHERE stream_id = 'card-1' AND version = 2"
        )
    done = audit("verify")
    assert done.returncode == 1, done.stderr
    (report,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert report["intact"] is False
    assert (report["first_problem"]["kind"], report["first_problem"]["stream_id"], report["first_problem"]["version"]) == (
        "INTEGRITY_PROBLEM_KIND_BROKEN_LINK",
        "card-1",
        "2",
    )
    table = audit("verify", "--format", "table")
    assert table.returncode == 1 and "problem found" in table.stdout and "broken_link" in table.stdout
    line = audit("checkpoint", "--compare", str(saved))
    assert line.returncode == 1 and len(line.stderr.splitlines()) == 1 and line.stderr.startswith("pinlife: the log")


def test_errors_are_one_line_and_exit_2(server, audit, history, tmp_path):
    # In a process of its own: nothing but the one line, not even gRPC's own log of the refused connection.
    line = one_line_error(pinlife_process("audit", "history", "card-1", "--server", f"127.0.0.1:{free_port()}"), "UNAVAILABLE")
    assert "Traceback" not in line
    one_line_error(audit("history", "card-nobody"), "NOT_FOUND")
    line = one_line_error(audit("query", "--from", "2026-12-02", "--to", "2026-12-01"), "INVALID_ARGUMENT")
    assert "filter.to" in line
    one_line_error(audit("query", "--event-type", "PinExploded"), "INVALID_ARGUMENT: filter.event_types")
    one_line_error(audit("verify", "--checkpoint", str(tmp_path / "missing.note")), "cannot read --checkpoint")
    one_line_error(audit("checkpoint"), "NOT_FOUND")  # nothing signed yet
    # --server defaults to $PINLIFE_LISTEN
    assert jsonl(pinlife("audit", "history", "card-2", env={"PINLIFE_LISTEN": server.target}))[0]["stream_id"] == "card-2"


# -- mutual TLS ------------------------------------------------------------------------
def terminal_files(pki: Pki, name: str) -> dict[str, str]:
    """A terminal's certificate and key as files, by the PINLIFE_ variables that name them."""
    leaf = pki.ca.issue_cert(name.replace("_", "-") + ".terminals.example", common_name=name)
    cert, key = pki.dir / f"{name}.pem", pki.dir / f"{name}-key.pem"
    cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return {"PINLIFE_CA": str(pki.dir / "terminal-ca.pem"), "PINLIFE_CERT": str(cert), "PINLIFE_CLIENT_KEY": str(key)}


def test_mutual_tls_options_roles_and_env(databases, keys, tmp_path):
    pki = Pki(tmp_path)
    srv = start(databases.create("sqlite"), keys, pki)
    try:
        counter = Client(srv.target, credentials=pki.credentials("ward_office-01"))
        counter.enroll("card-T1", {USER: "4821"})
        counter.close()
        auditor = terminal_files(pki, "auditor-01")
        options = ["--ca", auditor["PINLIFE_CA"], "--cert", auditor["PINLIFE_CERT"], "--key", auditor["PINLIFE_CLIENT_KEY"]]
        (enrolled,) = jsonl(pinlife("audit", "history", "card-T1", "--server", srv.target, *options))
        assert (enrolled["terminal_id"], enrolled["channel"], enrolled["event_type"]) == (
            "ward_office-01",
            "ward_office",
            "CardEnrolled",
        )
        # The same options serve every client command, before or after it (an auditor may read a PIN's status).
        for args in (
            ["status", "card-T1", "--server", srv.target, *options],
            ["--server", srv.target, *options, "status", "card-T1"],
        ):
            done = pinlife(*args)
            assert done.returncode == 0 and json.loads(done.stdout)["card_id"] == "card-T1", done.stderr
        # By the environment: a reader's certificate is refused, in one line.
        reader = terminal_files(pki, "medical_reader-01")
        line = one_line_error(
            pinlife("audit", "history", "card-T1", env={**reader, "PINLIFE_LISTEN": srv.target}), "PERMISSION_DENIED"
        )
        assert "medical_reader" in line
        assert jsonl(pinlife("audit", "history", "card-T1", env={**auditor, "PINLIFE_LISTEN": srv.target}))
        one_line_error(
            pinlife("audit", "stats", "--server", srv.target, "--ca", auditor["PINLIFE_CA"], "--cert", auditor["PINLIFE_CERT"]),
            "--cert and --key go together",
        )
        line = one_line_error(pinlife("audit", "stats", "--server", srv.target), "UNAVAILABLE")  # plain text to a TLS server
        assert "mutual TLS" in line
        garbage = {**auditor, "PINLIFE_CLIENT_KEY": auditor["PINLIFE_CA"]}  # not a key: gRPC's own log stays quiet
        assert "check --ca, --cert and --key" in one_line_error(
            pinlife_process("audit", "stats", "--server", srv.target, env=garbage), "UNAVAILABLE"
        )
    finally:
        srv.close()


def test_fetched_checkpoints_are_kept_and_checked_on_every_verify(server, audit, history, keys, tmp_path):
    kept = tmp_path / "kept.jsonl"
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    first = audit("checkpoint", "--format", "table")
    assert first.returncode == 0, first.stderr
    assert "kept in" in first.stderr and "(1 checkpoint of this server)" in first.stderr
    (entry,) = [json.loads(line) for line in kept.read_text().splitlines()]
    assert (entry["server"], entry["tree_size"], entry["note"]) == (server.target, 8, first.stdout)
    assert audit("checkpoint").returncode == 0 and len(kept.read_text().splitlines()) == 1  # one size kept once

    Client(server.target, terminal="reader-01").verify("card-2", USER, "1111")
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    assert audit("checkpoint").returncode == 0 and len(kept.read_text().splitlines()) == 2
    (report,) = jsonl(audit("verify"))
    # The kept two are linked by a consistency proof (checked by the CLI when the second was kept) to the
    # server's latest, which the check compares with the log: only the store's own two are recomputed.
    assert report["intact"] is True and report["checkpoints_checked"] == 2
    assert report["checkpoint_consistency"]["to_size"] >= 9
    assert [json.loads(line).get("extends") for line in kept.read_text().splitlines()][:2] == [None, 8]

    # The operator cuts the log and its own checkpoints back to the first one:
    # the kept checkpoint of the larger tree shows it.
    with server.store.writer.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_delete")
        conn.exec_driver_sql("DELETE FROM events WHERE position > 8")
        conn.exec_driver_sql("UPDATE log_head SET position = 8")
        conn.exec_driver_sql("DELETE FROM checkpoints WHERE tree_size > 8")
    done = audit("verify")
    assert done.returncode == 1, done.stderr
    (report,) = jsonl_any(done)
    supplied = [p for p in report["problems"] if p["kind"] == "INTEGRITY_PROBLEM_KIND_SUPPLIED_CHECKPOINT"]
    assert supplied and "the log ends at position" in supplied[0]["reason"], report
    (unkept,) = jsonl_any(audit("verify", "--no-keep"))
    assert "INTEGRITY_PROBLEM_KIND_SUPPLIED_CHECKPOINT" not in [p["kind"] for p in unkept["problems"]]

    # A checkpoint signed by another key for the same origin is not kept without --accept-new-key.
    lines = kept.read_text().splitlines()
    forged = [dict(json.loads(line), verifier_key="pinlife.test/log+00000000+" + "A" * 44) for line in lines]
    kept.write_text("".join(json.dumps(f) + "\n" for f in forged))
    refused = audit("checkpoint")
    assert refused.returncode == 1 and "not by the key kept" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert len(kept.read_text().splitlines()) == 2


def jsonl_any(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]
