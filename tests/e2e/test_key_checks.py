"""A different key under a known key id is refused at start, never served
(service/store/key_checks.py): served, it would turn every correct PIN into
a wrong one, and three correct entries would lock a card. Each key id's check
value is recorded in the store at first use; `pinlife dev-key` (and so
`make run`) never writes a key file over a store that already has verifiers.
Also: the key file's mode, `pinlife check` on a store that does not exist,
and an older key file without the integrity and checkpoint sections.

The CLI is configured by PINLIFE_DATABASE_URL, PINLIFE_KEY_FILE and
PINLIFE_ENV as an operator would: `pinlife serve` in its own process (python
-m pinlife.cli serve), the other commands in this one (harness.cli: the
same output and exit code, without a second of start-up each)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from pinlife.bootstrap.instance import KeysRefused
from pinlife.bootstrap.serving import Server
from pinlife.config.settings import Settings
from pinlife.domain.pins import PinType
from pinlife.keys.ring import KeyFileError, KeyRing, SecretRef, write_new_key_file
from pinlife.store.event_store import EventStore
from pinlife.store.tables import key_checks
from pinlife.v1 import common_pb2 as pb
from tests.e2e import harness
from tests.e2e.harness import ROOT, Client, ProcessServer, ThreadedServer, free_port
from tests.e2e.test_access import Pki
from tests.keys import ring as make_ring

USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGN = pb.PIN_TYPE_SIGNATURE
PINS = {USER: "4821", SIGN: "ABC123"}
CARD = "card-K1"


# --- helpers -------------------------------------------------------------------
def _env(url: str, key_file: Path, environment: str = "development", **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
    return {
        **base,
        "PINLIFE_ENV": environment,
        "PINLIFE_DATABASE_URL": url,
        "PINLIFE_KEY_FILE": str(key_file),
        "PINLIFE_LISTEN": f"127.0.0.1:{free_port()}",
        "PINLIFE_LOG_FORMAT": "json",
        "PINLIFE_WRITER": "thread",
        **extra,
    }


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`pinlife ARGS`: `serve` in its own process (one that does not refuse
    is still serving at the timeout: TimeoutExpired, the test fails), any
    other command in this one."""
    if args[0] == "serve":
        return harness.cli_process(*args, env=env, timeout=timeout)
    return harness.cli(*args, env=env)


def refusals(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stderr.splitlines() if "refusing_to_start" in line]


def _serve_refused(env: dict[str, str]) -> str:
    """`pinlife serve` exits 2 with one refusing_to_start line: its message."""
    done = cli("serve", env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    (line,) = refusals(done)
    assert line["level"] == "error"
    assert not any('"serving"' in line for line in done.stderr.splitlines())
    return line["message"]


def _stored_checks(url: str) -> dict[tuple[str, str], str]:
    store = EventStore(url)
    try:
        with store.reader.begin() as conn:
            rows = conn.execute(select(key_checks.c.purpose, key_checks.c.key_id, key_checks.c.check_value))
            return {(p, k): v for p, k, v in rows}
    finally:
        store.close()


def _stream(url: str, stream_id: str) -> list:
    store = EventStore(url)
    try:
        return store.log.stream(stream_id)
    finally:
        store.close()


def _rewrite(path: Path, change) -> None:
    """The key file as JSON, changed in place (mode kept 0600)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def _b64(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def _process_server(url: str, key_file: Path, log: Path, env: dict[str, str]) -> ProcessServer:
    """A real `pinlife serve` (on a port of its own) that has started serving."""
    return ProcessServer(url, key_file, log, {k: v for k, v in env.items() if k != "PINLIFE_LISTEN"})


def _settings(url: str) -> Settings:
    return Settings(env="test", database_url=url, listen="127.0.0.1:0", writer="thread")


def _new_store(databases, backend: str, tmp_path: Path) -> str:
    """An unmigrated store: a SQLite path that does not exist yet, or an empty PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'pinlife.db'}"
    return databases.create("postgres", migrate=False)


def _verify(target: str, pin: str = PINS[USER]) -> int:
    client = Client(target)
    try:
        return client.verify(CARD, USER, pin).check.result
    finally:
        client.close()


# --- the finding, end to end ---------------------------------------------------
def test_a_different_key_under_the_same_id_is_refused_and_never_locks_a_card(databases, backend, tmp_path):
    (tmp_path / "var").mkdir()
    url = _new_store(databases, backend, tmp_path)
    key_file = tmp_path / "var" / "dev-keys.json"
    env = _env(url, key_file)

    # `make run` on a fresh checkout: dev-key, migrate, serve.
    made = cli("dev-key", str(key_file), env=env)
    assert made.returncode == 0, made.stderr
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    assert cli("migrate", env=env).returncode == 0
    original = key_file.read_bytes()
    server = _process_server(url, key_file, tmp_path / "first.log", env)
    client = Client(server.target)
    try:
        client.enroll(CARD, PINS)
        assert client.verify(CARD, USER, PINS[USER]).check.result == pb.CHECK_RESULT_OK
        assert client.verify(CARD, SIGN, PINS[SIGN]).check.result == pb.CHECK_RESULT_OK
    finally:
        client.close()
        server.close()
    recorded = _stored_checks(url)
    assert recorded == KeyRing.load(key_file).check_values()  # recorded at first use
    assert {k for _, k in recorded} == {"dev-1", "integrity-1", "pinlife.dev/local"}
    history = _stream(url, CARD)

    # The key file is moved away: `make run` (dev-key) does not write a new one.
    saved = tmp_path / "saved-keys.json"
    key_file.rename(saved)
    refused = cli("dev-key", str(key_file), env=env)
    assert refused.returncode != 0
    assert "already has PIN verifiers" in refused.stderr and "restore the key file" in refused.stderr
    assert not key_file.exists()
    assert "WARNING: wrote development keys" not in refused.stderr

    # A different key file under the same ids, written by hand: the server refuses to start.
    write_new_key_file(key_file)
    assert key_file.read_bytes() != original
    other = KeyRing.load(key_file)
    assert set(other.check_values()) == set(recorded)  # the same ids ...
    assert all(other.check_values()[k] != v for k, v in recorded.items())  # ... of other keys
    message = _serve_refused(env)
    assert "'dev-1'" in message and "check value" in message
    assert "restore the key file" in message
    assert "'integrity-1'" in message and "'pinlife.dev/local'" in message  # every problem, in the one line
    with pytest.raises(KeysRefused, match=r"verifier key 'dev-1' is not the key this store was used with"):
        Server(_settings(url), other)

    # Nothing was written: the card is untouched, the first check values stand.
    assert _stream(url, CARD) == history
    assert _stored_checks(url) == recorded

    # The original key file restored: it serves, and the correct PIN is right.
    shutil.move(saved, key_file)
    assert key_file.read_bytes() == original
    server = ThreadedServer(url, KeyRing.load(key_file))  # `make run` serving is shown above, as a process
    client = Client(server.target)
    try:
        for _ in range(3):  # three correct entries never lock the card
            check = client.verify(CARD, USER, PINS[USER]).check
            assert check.result == pb.CHECK_RESULT_OK and not check.locked_now
        (state,) = client.status(CARD, USER).pins
        assert state.status == pb.PIN_STATUS_ACTIVE
        assert state.consecutive_failures == 0
    finally:
        client.close()
        server.close()
    assert [e.event_type for e in _stream(url, CARD)].count("PinVerificationFailed") == 0


def test_make_run_makes_keys_before_it_migrates_and_serves(tmp_path):
    """`make run` runs `pinlife dev-key PINLIFE_KEY_FILE` first: a refusal
    there (the test above) stops make before it serves."""
    key_file, url = tmp_path / "keys.json", f"sqlite:///{tmp_path / 'x.db'}"
    env = {**os.environ, "PINLIFE_KEY_FILE": str(key_file), "PINLIFE_DATABASE_URL": url}
    done = subprocess.run(["make", "-n", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "pinlife.cli" in line]
    assert [line.split("pinlife.cli ")[1] for line in lines] == [f"dev-key {key_file}", "migrate", "serve"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_dev_key_writes_a_key_file_over_a_store_without_verifiers(db_url, tmp_path):
    key_file = tmp_path / "keys.json"
    done = cli("dev-key", str(key_file), env=_env(db_url, key_file))
    assert done.returncode == 0, done.stderr
    assert "wrote development keys" in done.stderr
    KeyRing.load(key_file)


# --- rotation: a new key id starts and is recorded --------------------------------
def test_a_new_key_id_starts_and_its_check_value_is_recorded(db_url, tmp_path):
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    first = KeyRing.load(key_file)
    server = ThreadedServer(db_url, first)
    client = Client(server.target)
    try:
        client.enroll(CARD, PINS)
    finally:
        client.close()
        server.close()
    before = _stored_checks(db_url)
    assert before == first.check_values()

    def rotate(data):  # dev-2 and integrity-2 current; dev-1 and integrity-1 kept
        data["keys"]["dev-2"] = _b64()
        data["current"] = "dev-2"
        data["integrity"]["keys"]["integrity-2"] = _b64()
        data["integrity"]["current"] = "integrity-2"

    _rewrite(key_file, rotate)
    rotated = KeyRing.load(key_file)
    server = ThreadedServer(db_url, rotated)
    try:
        assert _verify(server.target) == pb.CHECK_RESULT_OK  # made under dev-1, checked, re-keyed to dev-2
        assert server.store.cards.secret(SecretRef.pin(CARD, PinType.USER_CERTIFICATE)).key_id == "dev-2"
    finally:
        server.close()
    after = _stored_checks(db_url)
    assert after == rotated.check_values()
    assert {("verifier", "dev-1"), ("verifier", "dev-2"), ("integrity", "integrity-1"), ("integrity", "integrity-2")} <= set(
        after
    )
    assert {k: after[k] for k in before} == before  # the first values are kept

    # And dev-2, once recorded, is held to its value like dev-1.
    _rewrite(key_file, lambda data: data["keys"].update({"dev-2": _b64()}))
    with pytest.raises(KeysRefused, match=r"verifier key 'dev-2' .*check value differs"):
        Server(_settings(db_url), KeyRing.load(key_file))


# --- integrity and checkpoint keys ------------------------------------------------
REPLACE = {
    "integrity": (
        lambda data: data["integrity"]["keys"].update({"integrity-1": _b64()}),
        "the integrity key 'integrity-1' is not the key this store was used with",
    ),
    "checkpoint": (
        lambda data: data["checkpoint"].update(seed=_b64()),
        "the checkpoint signing key of origin 'pinlife.dev/local' is not the key this store was used with",
    ),
}


@pytest.mark.parametrize("which", sorted(REPLACE))
def test_an_integrity_or_checkpoint_key_replaced_under_its_id_is_refused(db_url, tmp_path, which):
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    server = ThreadedServer(db_url, KeyRing.load(key_file))
    client = Client(server.target)
    try:
        client.enroll(CARD, PINS)
    finally:
        client.close()
        server.close()
    recorded, history = _stored_checks(db_url), _stream(db_url, CARD)
    original = key_file.read_bytes()

    change, expected = REPLACE[which]
    _rewrite(key_file, change)
    # What `pinlife serve` says in its one refusing_to_start line (a process shows it in the test above).
    with pytest.raises(KeysRefused) as refused:
        Server(_settings(db_url), KeyRing.load(key_file))
    message = str(refused.value)
    assert message.startswith(expected) and "check value" in message
    assert "verifier key" not in message  # only the key that differs is named
    assert _stored_checks(db_url) == recorded and _stream(db_url, CARD) == history

    key_file.write_bytes(original)  # restored: it starts
    server = ThreadedServer(db_url, KeyRing.load(key_file))
    try:
        assert _verify(server.target) == pb.CHECK_RESULT_OK
    finally:
        server.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_key_file_without_the_checkpoint_key_a_store_was_signed_with_is_refused(db_url, tmp_path):
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    ThreadedServer(db_url, KeyRing.load(key_file)).close()
    _rewrite(key_file, lambda data: data.pop("checkpoint"))
    with pytest.raises(KeysRefused, match="the key file has no checkpoint key"):
        Server(_settings(db_url), KeyRing.load(key_file))


# --- the key file's mode ------------------------------------------------------------
@pytest.fixture
def exposed_key_file(db_url, tmp_path):
    """A key file others may read, beside a store only its owner may (the
    store's own mode is another check, service/store/engine.py)."""
    Path(db_url.removeprefix("sqlite:///")).chmod(0o600)
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    key_file.chmod(0o644)
    return key_file


@pytest.mark.parametrize("backend", ["sqlite"])
def test_production_refuses_a_key_file_others_may_read(db_url, exposed_key_file, tmp_path):
    pki = Pki(tmp_path)
    access_file = pki.access_file()
    (tmp_path / "server-key.pem").chmod(0o600)
    env = _env(db_url, exposed_key_file, environment="production", PINLIFE_ACCESS_FILE=str(access_file))
    expected = f"the key file (PINLIFE_KEY_FILE) {exposed_key_file} is accessible by group or others (mode 0644): chmod 600 {exposed_key_file}"
    for command in ("check", "serve"):
        done = cli(command, env=env, timeout=30)
        assert done.returncode != 0, (command, done.stderr)
        assert expected in done.stderr, (command, done.stderr)
        assert done.stdout == "" and '"serving"' not in done.stderr
    assert _stored_checks(db_url) == {}  # refused before the store was touched


@pytest.mark.parametrize("backend", ["sqlite"])
def test_development_warns_of_a_key_file_others_may_read(db_url, exposed_key_file, tmp_path):
    env = _env(db_url, exposed_key_file)
    warning = f"pinlife: warning: the key file (PINLIFE_KEY_FILE) {exposed_key_file} is accessible by group or others (mode 0644): chmod 600 {exposed_key_file}"
    done = cli("check", env=env)
    assert done.returncode == 0, done.stderr
    assert warning in done.stderr
    assert json.loads(done.stdout)["head_position"] == 0
    server = _process_server(db_url, exposed_key_file, tmp_path / "server.log", env)
    server.close()
    assert warning in (tmp_path / "server.log").read_text()


# --- a store that does not exist ---------------------------------------------------
@pytest.mark.parametrize("command", ["check", "checkpoint"])
def test_a_command_on_a_sqlite_store_that_does_not_exist_refuses_and_does_not_make_it(tmp_path, command):
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    missing = tmp_path / "missing.db"
    done = cli(command, env=_env(f"sqlite:///{missing}", key_file))
    assert done.returncode != 0
    assert f"there is no store at {missing}" in done.stderr and "`pinlife migrate`" in done.stderr
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == [key_file]  # no -wal, -shm or journal either


# --- an older key file ---------------------------------------------------------------
def test_an_old_key_file_is_refused_until_dev_key_adds_the_missing_sections(tmp_path):
    key_file = tmp_path / "keys.json"
    verifier = os.urandom(32)
    key_file.write_text(json.dumps({"current": "dev-1", "keys": {"dev-1": base64.b64encode(verifier).decode()}}))
    key_file.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"has no \"integrity\" section .*`pinlife dev-key "):
        KeyRing.load(key_file)
    env = _env(f"sqlite:///{tmp_path / 'absent.db'}", key_file)

    done = cli("dev-key", str(key_file), env=env)
    assert done.returncode == 0, done.stderr
    assert "keeping its keys, added integrity and checkpoint keys" in done.stdout
    data = json.loads(key_file.read_text())
    assert data["current"] == "dev-1" and data["keys"] == {"dev-1": base64.b64encode(verifier).decode()}
    assert (key_file.stat().st_mode & 0o777) == 0o600
    ring = KeyRing.load(key_file)
    assert ring.integrity is not None and ring.checkpoint is not None
    assert (
        ring.check_values()[("verifier", "dev-1")]
        == make_ring("dev-1", {"dev-1": verifier}).check_values()[("verifier", "dev-1")]
    )

    complete = key_file.read_bytes()
    again = cli("dev-key", str(key_file), env=env)
    assert again.returncode == 0 and "keeping its keys" in again.stdout and "added" not in again.stdout
    assert key_file.read_bytes() == complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]  # no temporary file left, no store made


# --- `pinlife checkpoint`: a write outside the server ----------------------------------
@pytest.mark.parametrize("backend", ["sqlite"])
def test_pinlife_checkpoint_refuses_a_different_checkpoint_key_under_the_recorded_origin(db_url, tmp_path):
    from pinlife.store import checkpoints

    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    env = _env(db_url, key_file, environment="test")
    server = _process_server(db_url, key_file, tmp_path / "server.log", env)
    client = Client(server.target)
    try:
        client.enroll(CARD, PINS)
    finally:
        client.close()
        server.proc.kill()  # a crash: no checkpoint signed at stop, events left to sign
        server.proc.wait()
        server.log.close()
    store = EventStore(db_url)
    try:
        assert checkpoints.stored(store) == []
    finally:
        store.close()

    _rewrite(key_file, REPLACE["checkpoint"][0])
    done = cli("checkpoint", env=env)
    store = EventStore(db_url)
    try:
        signed = checkpoints.stored(store)
    finally:
        store.close()
    assert signed == [], "a checkpoint was signed with a key the store was not used with"
    assert done.returncode != 0 and "'pinlife.dev/local'" in done.stderr and "check value" in done.stderr


@pytest.mark.postgres
def test_dev_key_names_a_store_with_verifiers_without_its_password(databases, tmp_path, keys):
    from sqlalchemy.engine import make_url

    from pinlife.app.batch import ThreadRunner
    from tests.clock import FakeClock
    from tests.store.helpers import enroll, run_ok

    url = databases.create("postgres")
    store = EventStore(url)
    try:
        run_ok(ThreadRunner(store, keys, FakeClock()), enroll("card-1"))
    finally:
        store.close()
    with_password = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)  # trust auth ignores it
    refused = cli("dev-key", str(tmp_path / "keys.json"), env=_env(with_password, tmp_path / "keys.json"))
    assert refused.returncode != 0 and "already has PIN verifiers" in refused.stderr, refused.stderr
    assert "s3cret-pw" not in refused.stderr + refused.stdout
    assert "postgres:***@" in refused.stderr
