"""The terminal throttle under bursts (issue 12, finding 3): one terminal's
concurrent failures on many cards never get past max_distinct_cards + 1
cards, on one instance and on two instances sharing one PostgreSQL store;
status misses count (enumeration by GetPinStatus), 200 in flight at once;
refusals do not grow the log (2,000 at once, on one SQLite instance and on
two PostgreSQL ones).

The throttle's rules one call at a time (the penalty running out, the
window starting afresh, a throttled terminal's earlier answers replayed) are
tested through the servicers on the in-memory store:
tests/unit/test_api_throttle.py.

Over mutual TLS with an access file ([throttle] section) and per-terminal
client certificates (trustme), as in test_access.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import trustme

from pinlife.config.access import load_access_config
from pinlife.domain.streams import terminal_stream
from pinlife.store.event_store import EventStore
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from pinlife.v1 import pin_service_pb2 as ppb
from tests.clock import FakeClock
from tests.conftest import make_key_file
from tests.e2e.harness import NO_RATE_LIMITS, NO_RATE_LIMITS_ENV, ROOT, Client, ThreadedServer, free_port
from tests.keys import INTEGRITY
from tests.rpc import CALLS_AT, retry_seconds

USER = pb.PIN_TYPE_USER_CERTIFICATE
OFFICE = "naka-ward-office"  # of the shipped Yokohama calendar
# A Tuesday, 10:00 in Tokyo: the ward office is open.
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
THROTTLED = grpc.StatusCode.RESOURCE_EXHAUSTED  # service/api/errors.py: Throttled
FAILURE_EVENTS = {"PinVerificationFailed", "PinLocked", "LockedPinAttempted"}
READER, COUNTER, AUDITOR = "medical_reader-01", "ward_office-01", "auditor-01"
READER_2 = "medical_reader-02"  # refused in a storm on the PostgreSQL instances the burst throttles READER on
ENROLL_RPC = "/pinlife.v1.CounterService/EnrollCard"


class Pki:
    """A terminal CA, the server's certificate and an access file."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.ca = trustme.CA(organization_name="pinlife terminal CA")
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        server.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
        server.private_key_pem.write_to_path(str(folder / "server-key.pem"))
        (folder / "server-key.pem").chmod(0o600)
        self.ca.cert_pem.write_to_path(str(folder / "terminal-ca.pem"))
        self._creds: dict[str, grpc.ChannelCredentials] = {}

    def credentials(self, name: str) -> grpc.ChannelCredentials:
        """One certificate per terminal, the same for all its channels."""
        if name not in self._creds:
            leaf = self.ca.issue_cert(name.replace("_", "-") + ".terminals.example", common_name=name)
            self._creds[name] = grpc.ssl_channel_credentials(
                root_certificates=self.ca.cert_pem.bytes(),
                private_key=leaf.private_key_pem.bytes(),
                certificate_chain=b"".join(b.bytes() for b in leaf.cert_chain_pems),
            )
        return self._creds[name]

    def access_file(self, max_distinct_cards: int, window_seconds: int = 600, penalty_seconds: int = 900) -> Path:
        path = self.dir / "access.toml"
        path.write_text(f"""
[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "terminal-ca.pem"

[throttle]
max_distinct_cards = {max_distinct_cards}
window_seconds = {window_seconds}
penalty_seconds = {penalty_seconds}

[terminals.{COUNTER}]
role = "ward_office"
office = "{OFFICE}"

[terminals.{READER}]
role = "medical_reader"

[terminals.{READER_2}]
role = "medical_reader"

[terminals.{AUDITOR}]
role = "auditor"
""")
        return path


def client_for(target: str, pki: Pki, name: str) -> Client:
    return Client(target, credentials=pki.credentials(name))


def threaded(url: str, keys, pki: Pki, clock, **throttle) -> ThreadedServer:
    path = pki.access_file(**throttle)
    return ThreadedServer(url, keys, clock=clock, access=load_access_config(path), access_file=path, rates=NO_RATE_LIMITS)


class TlsProcesses:
    """`python -m pinlife.cli serve` processes with the access file (mutual
    TLS), started together; ready once each answers a TLS health check."""

    def __init__(self, n: int, url: str, key_file: Path, access_file: Path, pki: Pki, folder: Path):
        self.targets, self.procs, self.logs = [], [], []
        for i in range(n):
            target = f"127.0.0.1:{free_port()}"
            env = {
                **os.environ,
                "PINLIFE_ENV": "test",
                "PINLIFE_DATABASE_URL": url,
                "PINLIFE_KEY_FILE": str(key_file),
                "PINLIFE_LISTEN": target,
                "PINLIFE_ACCESS_FILE": str(access_file),
                "PINLIFE_CLOCK": "start:2026-12-01T10:00:00+09:00",
                "PINLIFE_LOG_FORMAT": "json",
                **NO_RATE_LIMITS_ENV,  # bursts past any request rate: the throttle's bound is measured
            }
            log = open(folder / f"server-{i}.log", "wb")
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pinlife.cli", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
            self.targets.append(target)
        deadline = time.monotonic() + 30
        for i, target in enumerate(self.targets):
            probe = client_for(target, pki, AUDITOR)
            try:
                while not probe.serving():
                    if self.procs[i].poll() is not None or time.monotonic() > deadline:
                        self.close()
                        raise RuntimeError(f"server {i} did not start; see {folder / f'server-{i}.log'}")
                    time.sleep(0.02)
            finally:
                probe.close()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


# -- helpers ---------------------------------------------------------------------
def enroll_all(counter: Client, cards: list[str]) -> None:
    futures = [
        counter.counter.EnrollCard.future(
            cpb.EnrollCardRequest(request_id=str(uuid.uuid4()), card_id=card, pins=[cpb.InitialPin(pin_type=USER, pin="4821")]),
            timeout=30,
        )
        for card in cards
    ]
    for f in futures:
        assert f.result().stream_version == 1


def outcome(future) -> object:
    """A check's result, or the gRPC code the call was refused with."""
    try:
        return future.result().check.result
    except grpc.RpcError as err:
        return err.code()


def wrong_verify_burst(readers: list[Client], cards: list[str], per_card: int = 3) -> list[tuple[str, object]]:
    """Every call in flight at once: `per_card` wrong verifies of each card,
    round by round over the cards, spread over the readers' channels (one
    card's verifies reach different instances)."""
    calls = []
    for r in range(per_card):
        for n, card in enumerate(cards):
            reader = readers[(n + r) % len(readers)]
            req = ppb.VerifyPinRequest(request_id=str(uuid.uuid4()), card_id=card, pin_type=USER, pin="0000")
            calls.append((card, reader.pins.VerifyPin.future(req, timeout=60)))
    return [(card, outcome(f)) for card, f in calls]


def assert_burst_bounded(store: EventStore, results: list[tuple[str, object]], cards: list[str], bound: int) -> None:
    """At most bound + 1 cards answered (the failure that crosses the bound is
    answered, then the terminal is refused), every other call refused by the
    throttle, and the store agrees."""
    answered = [(card, r) for card, r in results if not isinstance(r, grpc.StatusCode)]
    refused = Counter(r for _, r in results if isinstance(r, grpc.StatusCode))
    assert {r for _, r in answered} <= {pb.CHECK_RESULT_WRONG_PIN, pb.CHECK_RESULT_LOCKED}, answered
    answered_cards = {card for card, _ in answered}
    assert len(answered_cards) <= bound + 1, (len(answered_cards), len(answered))
    assert set(refused) == {THROTTLED}, refused
    assert len(answered) + refused[THROTTLED] == len(results)

    # Every card's stream: failures only on answered cards, one failure event per answer.
    events = list(store.log.all_events())
    failed_cards = {e.stream_id for e in events if e.event_type in FAILURE_EVENTS}
    locked_cards = {e.stream_id for e in events if e.event_type == "PinLocked"}
    assert failed_cards == answered_cards
    assert len(failed_cards) <= bound + 1
    assert locked_cards <= answered_cards
    per_card = Counter(card for card, _ in answered)
    assert locked_cards == {card for card, n in per_card.items() if n >= 3}
    attempts = Counter(e.stream_id for e in events if e.event_type in ("PinVerificationFailed", "LockedPinAttempted"))
    assert attempts == per_card
    for card in set(cards) - answered_cards:  # a refused attempt cost its holder nothing
        assert [e.event_type for e in store.log.stream(card)] == ["CardEnrolled"]

    # Throttled once, recorded in the terminal's stream.
    terminal = store.log.stream(terminal_stream(READER))
    assert [e.event_type for e in terminal] == ["TerminalThrottled"]
    assert terminal[0].payload["distinct_cards"] == bound + 1 == len(answered_cards)
    assert store.integrity.first_broken_link(INTEGRITY) is None
    assert store.cards.projection() == store.cards.rebuild()


# -- 1a: the burst, on two PostgreSQL instances and on one SQLite instance -------
BURST_CARDS = [f"card-B{i:03d}" for i in range(100)]
BOUND = 10


@pytest.fixture(scope="module")
def two_pg_instances(module_databases, tmp_path_factory):
    """Two TLS server processes on one PostgreSQL store, their targets, the
    store and the PKI their terminals' certificates come from; shared by the
    module's tests (the burst's reader and the storm's are two terminals)."""
    url = module_databases.create("postgres")
    tmp_path = tmp_path_factory.mktemp("two-pg-instances")
    pki = Pki(tmp_path)
    key_file = make_key_file(tmp_path / "keys.json", {"k1": os.urandom(32)}, "k1")
    servers = TlsProcesses(2, url, key_file, pki.access_file(max_distinct_cards=BOUND), pki, tmp_path)
    store = EventStore(url)
    yield servers.targets, store, pki
    store.close()
    servers.close()


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_burst_of_wrong_verifies_on_two_postgres_instances_stays_within_the_bound(two_pg_instances):
    targets, store, pki = two_pg_instances
    counter = client_for(targets[0], pki, COUNTER)
    enroll_all(counter, BURST_CARDS)
    readers = [client_for(t, pki, READER) for t in targets for _ in range(2)]  # same certificate, both instances
    try:
        results = wrong_verify_burst(readers, BURST_CARDS)
        assert len(results) == 300
        assert_burst_bounded(store, results, BURST_CARDS, BOUND)
        # Both instances refuse the terminal now.
        for reader in readers[::2]:
            with pytest.raises(grpc.RpcError) as err:
                reader.verify(BURST_CARDS[-1], USER, "4821")
            assert err.value.code() == THROTTLED
    finally:
        for c in (counter, *readers):
            c.close()


def test_a_burst_of_wrong_verifies_on_one_sqlite_instance_stays_within_the_bound(databases, keys, pki):
    server = threaded(databases.create("sqlite"), keys, pki, FakeClock(CALLS_AT), max_distinct_cards=BOUND)
    counter = client_for(server.target, pki, COUNTER)
    readers = [client_for(server.target, pki, READER) for _ in range(2)]
    try:
        enroll_all(counter, BURST_CARDS)
        results = wrong_verify_burst(readers, BURST_CARDS)
        assert len(results) == 300
        assert_burst_bounded(server.store, results, BURST_CARDS, BOUND)
    finally:
        for c in (counter, *readers):
            c.close()
        server.close()


# -- 1b: enumeration by status reads -------------------------------------------
def test_status_misses_throttle_a_terminal_enumerating_cards(db_url, keys, pki):
    clock = FakeClock(CALLS_AT)
    server = threaded(db_url, keys, pki, clock, max_distinct_cards=5, window_seconds=600, penalty_seconds=60)
    counter = client_for(server.target, pki, COUNTER)
    auditor = client_for(server.target, pki, AUDITOR)
    try:
        counter.enroll("card-K1", {USER: "4821"})
        length = sum(1 for _ in server.store.log.all_events())
        futures = [
            auditor.pins.GetPinStatus.future(ppb.GetPinStatusRequest(card_id=f"ghost-{i:03d}"), timeout=60) for i in range(200)
        ]
        codes = Counter(outcome_code(f) for f in futures)
        assert codes == {grpc.StatusCode.NOT_FOUND: 6, THROTTLED: 194}
        stream = server.store.log.stream(terminal_stream(AUDITOR))
        (throttled,) = [e for e in stream if e.event_type == "TerminalThrottled"]
        assert throttled.payload["distinct_cards"] == 6
        # an auditor's status reads are recorded (the six answered); refusals append nothing else
        assert sorted(e.event_type for e in stream) == ["AuditRead"] * 6 + ["TerminalThrottled"]
        assert sum(1 for _ in server.store.log.all_events()) == length + 7

        # Throttled: even an enrolled card's status is refused, with the time left.
        clock.advance(timedelta(seconds=30))
        with pytest.raises(grpc.RpcError) as err:
            auditor.status("card-K1")
        assert err.value.code() == THROTTLED
        assert 1 <= retry_seconds(err.value) <= 30
        clock.advance(timedelta(seconds=29))
        with pytest.raises(grpc.RpcError) as err:
            auditor.status("card-K1")
        assert err.value.code() == THROTTLED
        # Another terminal is not throttled.
        assert counter.status("card-K1").card_status == pb.CARD_STATUS_ACTIVE

        # Once the penalty has passed: answered again, and the window starts afresh.
        clock.advance(timedelta(seconds=1))
        assert auditor.status("card-K1").card_status == pb.CARD_STATUS_ACTIVE
        for i in range(6):
            with pytest.raises(grpc.RpcError) as err:
                auditor.status(f"ghost-{i:03d}")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            auditor.status("card-K1")
        assert err.value.code() == THROTTLED
        throttles = [e for e in server.store.log.stream(terminal_stream(AUDITOR)) if e.event_type != "AuditRead"]
        assert [e.event_type for e in throttles] == ["TerminalThrottled"] * 2
        assert server.store.integrity.first_broken_link(INTEGRITY) is None
    finally:
        counter.close()
        auditor.close()
        server.close()


def outcome_code(future) -> grpc.StatusCode:
    try:
        future.result()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


# -- 1c: refusals do not grow the log ------------------------------------------
def enroll_storm(clients: list[Client], n: int, wave: int = 250) -> Counter:
    """n EnrollCard calls, `wave` of them in flight at a time: grpc itself
    (1.85, also a bare grpc.aio server) resets a few streams as CANCELLED,
    before any handler runs, when a couple of thousand arrive at once."""
    codes: Counter = Counter()
    for start in range(0, n, wave):
        futures = [
            clients[i % len(clients)].counter.EnrollCard.future(
                cpb.EnrollCardRequest(
                    request_id=str(uuid.uuid4()), card_id=f"card-S{i:04d}", pins=[cpb.InitialPin(pin_type=USER, pin="1234")]
                ),
                timeout=60,
            )
            for i in range(start, min(n, start + wave))
        ]
        codes.update(outcome_code(f) for f in futures)
    return codes


@pytest.mark.parametrize("backend", ["sqlite"])  # on PostgreSQL: two instances, below
def test_refusals_do_not_grow_the_log(db_url, keys, pki):
    clock = FakeClock(CALLS_AT)
    server = threaded(db_url, keys, pki, clock, max_distinct_cards=BOUND, window_seconds=600)
    readers = [client_for(server.target, pki, READER) for _ in range(4)]
    try:
        assert enroll_storm(readers, 2000) == {grpc.StatusCode.PERMISSION_DENIED: 2000}
        events = list(server.store.log.all_events())
        terminal = server.store.log.stream(terminal_stream(READER))
        assert len(events) == len(terminal) and 1 <= len(terminal) <= 2
        first = terminal[0]
        assert first.event_type == "AccessDenied" and first.payload["repeated"] == 0
        assert first.payload["rpc"] == ENROLL_RPC and first.channel == "medical_reader" and first.terminal_id == READER
        assert all(not e.stream_id.startswith("card-S") for e in events)  # no card was enrolled

        # The next window's first refusal carries the count of those only counted.
        clock.advance(timedelta(seconds=601))
        assert enroll_storm(readers[:1], 1) == {grpc.StatusCode.PERMISSION_DENIED: 1}
        terminal = server.store.log.stream(terminal_stream(READER))
        assert [e.event_type for e in terminal] == ["AccessDenied", "AccessDenied"]
        assert terminal[1].payload["repeated"] == 1999
        assert server.store.integrity.first_broken_link(INTEGRITY) is None
    finally:
        for c in readers:
            c.close()
        server.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_refusals_on_two_postgres_instances_do_not_grow_the_log(two_pg_instances):
    targets, store, pki = two_pg_instances
    readers = [client_for(t, pki, READER_2) for t in targets for _ in range(2)]
    try:
        before = store.log.head_position()
        assert enroll_storm(readers, 2000) == {grpc.StatusCode.PERMISSION_DENIED: 2000}
        terminal = store.log.stream(terminal_stream(READER_2))
        assert 1 <= len(terminal) <= 2  # one per window and instance
        assert {e.event_type for e in terminal} == {"AccessDenied"}
        assert all(e.payload["repeated"] == 0 for e in terminal)  # each instance's first in its window
        assert store.log.head_position() - before == len(terminal)  # the storm appended only these
        assert store.integrity.first_broken_link(INTEGRITY) is None
    finally:
        for c in readers:
            c.close()
