"""`pinlife config check` runs the checks `serve` runs before it binds, and
lists every problem at once (exit 1, one line each, no traceback); `serve`
refuses the same files (exit 2). With --connect it also opens the database:
reachable, at this code's schema, holding this key file's check values.

`config check` and `migrate` run in this process (harness.cli: the same
output and exit code, without the second an interpreter costs); `serve`
in its own, as an operator starts it."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pinlife.keys.ring import KeyRing
from pinlife.store.event_store import EventStore
from pinlife.store.key_checks import key_problems
from tests.conftest import make_key_file
from tests.e2e.harness import ROOT, cli, cli_process, free_port
from tests.unit.test_config_files import write_tls

TLS = "[tls]\ncert = 'server.pem'\nkey = 'server-key.pem'\nclient_ca = 'terminal-ca.pem'\n"
GOOD_TERMINALS = "[terminals.naka-01]\nrole = 'ward_office'\noffice = 'naka-ward-office'\n"
TYPOS = (
    "[throttle]\nmax_distinct_card = 3\n"
    "[terminal.audit-01]\nrole = 'auditor'\n"
    "[terminals.lost-reader]\nrole = 'medical_reader'\nrevokd = true\n"
    "[terminals.kiosk-01]\nrole = 'convenience_store'\nchain = 'seven'\n"
    "[terminals.naka-01]\nrole = 'ward_office'\noffice = 'naka-ward'\n"
)


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`pinlife ARGS` with no PINLIFE_ variable but `env`'s: `serve` in its
    own process, the other commands in this one."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
    return (cli_process if args[0] == "serve" else cli)(*args, env={**clean, "PINLIFE_LOG_FORMAT": "json", **env})


def problems(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line.removeprefix("  - ") for line in done.stderr.splitlines() if line.startswith("  - ")]


def configuration(tmp_path: Path, access: str, *, env: str = "test", database: str | None = None) -> Path:
    write_tls(tmp_path)
    make_key_file(tmp_path / "keys.json", {"k1": b"k" * 32}, "k1")
    (tmp_path / "access.toml").write_text(TLS + access)
    f = tmp_path / "pinlife.toml"
    f.write_text(
        f"[server]\nenv = '{env}'\nlisten = '127.0.0.1:{free_port()}'\n"
        f"[store]\ndatabase_url = '{database or 'sqlite:///' + str(tmp_path / 'pinlife.db')}'\nwriter = 'thread'\n"
        "[keys]\nkey_file = 'keys.json'\n[access]\naccess_file = 'access.toml'\n"
    )
    return f


def test_typos_in_the_access_rules_are_listed_at_once_and_serve_refuses_them(tmp_path):
    f = configuration(tmp_path, TYPOS)
    done = run("config", "check", str(f), env={})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("pinlife: configuration: 5 problems:\n")
    where = f"access file {tmp_path / 'access.toml'}: "
    assert problems(done) == [
        where + "terminal: unknown section (did you mean terminals?)",
        where + "terminals.lost-reader.revokd: unknown key (did you mean revoked?)",
        where + f"terminals.kiosk-01.chain: 'seven' is not a chain of {ROOT / 'service/config/offices.toml'} (it has no chains)",
        where + f"terminals.naka-01.office: 'naka-ward' is not an office of {ROOT / 'service/config/offices.toml'} "
        "(did you mean naka-ward-office?)",
        where + "throttle.max_distinct_card: unknown key (did you mean max_distinct_cards?)",
    ]
    served = run("serve", env={"PINLIFE_CONFIG": str(f)})
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert "terminals.lost-reader.revokd: unknown key (did you mean revoked?)" in served.stderr
    assert "serving" not in served.stderr


def test_what_serve_refuses_before_binding_config_check_refuses_too(tmp_path):
    """A production key file others may read, a TLS key that is not the
    certificate's, an unknown database driver, and a typo in the offices
    file: every one listed."""
    f = configuration(tmp_path, GOOD_TERMINALS, env="production", database="mysql://pinlife@db/pinlife")
    (tmp_path / "keys.json").chmod(0o644)
    other = tmp_path / "other"
    other.mkdir()
    write_tls(other)
    (tmp_path / "access.toml").write_text(TLS.replace("'server-key.pem'", "'other/server-key.pem'") + GOOD_TERMINALS)
    (tmp_path / "offices.toml").write_text(
        "[offices.naka-ward-office]\nkind = 'ward_office'\nwards = ['naka']\n"
        "hours = [{ days = ['mon'], open = '08:45', closes = '17:00' }]\n"
    )
    f.write_text(f.read_text() + "[procedures]\noffices_file = 'offices.toml'\n")
    done = run("config", "check", str(f), env={})
    assert done.returncode == 1
    found = problems(done)
    assert [p.split(" ")[0] for p in found] == ["PINLIFE_DATABASE_URL", "offices", "offices", "access", "the"], found
    assert "not 'mysql'" in found[0]
    assert found[1].endswith("offices.naka-ward-office.hours[0].open: unknown key (did you mean opens?)")
    assert "is not the key of the certificate" in found[3]
    assert found[4].startswith(f"the key file (PINLIFE_KEY_FILE) {tmp_path / 'keys.json'} is accessible by group or others")
    served = run("serve", env={"PINLIFE_CONFIG": str(f)})
    assert served.returncode == 2 and "not 'mysql'" in served.stderr and "Traceback" not in served.stderr


@pytest.mark.parametrize("url", ["garbage", "mysql://pinlife@db/pinlife"])
def test_a_database_url_without_a_known_driver_is_not_ok(tmp_path, url):
    f = configuration(tmp_path, GOOD_TERMINALS, database=url)
    done = run("config", "check", str(f), env={})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("pinlife: configuration: PINLIFE_DATABASE_URL ([store] database_url) ")


def test_a_good_configuration_is_ok_and_connect_checks_the_database(tmp_path):
    f = configuration(tmp_path, GOOD_TERMINALS)
    done = run("config", "check", str(f), env={})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"pinlife: {f}: ok (test, mutual TLS, sqlite store)\n"
    done = run("config", "check", "--connect", str(f), env={})
    assert done.returncode == 1 and problems(done) == [] and "there is no store at" in done.stderr
    assert not (tmp_path / "pinlife.db").exists()  # config check makes nothing
    (tmp_path / "pinlife.db").touch(mode=0o600)
    done = run("config", "check", "--connect", str(f), env={})
    assert done.returncode == 1 and "the database is not migrated" in done.stderr and "run `pinlife migrate`" in done.stderr
    assert run("migrate", env={"PINLIFE_CONFIG": str(f)}).returncode == 0
    done = run("config", "check", "--connect", str(f), env={})
    assert (done.returncode, done.stderr) == (0, "")
    assert "database at schema head with this key file's check values" in done.stdout
    # the store was used with another key under the same id
    url = f"sqlite:///{tmp_path / 'pinlife.db'}"
    store = EventStore(url)
    try:
        other = make_key_file(tmp_path / "other-keys.json", {"k1": b"o" * 32}, "k1")
        assert key_problems(store, KeyRing.load(other), datetime.now(UTC)) == []  # records its check values
    finally:
        store.close()
    done = run("config", "check", "--connect", str(f), env={})
    assert done.returncode == 1
    assert "PINLIFE_KEY_FILE: the verifier key 'k1' is not the key this store was used with" in done.stderr


@pytest.mark.postgres
def test_connect_names_an_unreachable_postgresql(tmp_path):
    f = configuration(tmp_path, GOOD_TERMINALS, database=f"postgresql://postgres@127.0.0.1:{free_port()}/pinlife")
    assert run("config", "check", str(f), env={}).returncode == 0  # without --connect, nothing is opened
    done = run("config", "check", "--connect", str(f), env={})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot be reached" in done.stderr and "start PostgreSQL there" in done.stderr
