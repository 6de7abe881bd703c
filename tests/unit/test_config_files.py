"""The access rules and the offices file are read as strictly as the
settings (service/config/schema.py): an unknown section or key is refused
by name with the nearest known one, values are checked (types, ranges,
times, days), a terminal's office and chain must be the offices file's, the
TLS files must be PEM and the key the certificate's, and every problem is
reported at once, each naming where it is."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import trustme

from pinlife.config.access import AccessConfigError, access_from_settings, load_access_config
from pinlife.config.offices import DEFAULT_OFFICES_FILE, OfficesConfigError, load_offices, load_policy
from pinlife.config.schema import nearest
from pinlife.config.settings import load
from pinlife.domain.policy import ThrottlePolicy

SHIPPED = load_offices(None)


def write_tls(folder: Path, cert: str = "server.pem", key: str = "server-key.pem", client_ca: str = "terminal-ca.pem") -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / cert))
    leaf.private_key_pem.write_to_path(str(folder / key))
    (folder / key).chmod(0o600)
    ca.cert_pem.write_to_path(str(folder / client_ca))


TLS = '[tls]\ncert = "server.pem"\nkey = "server-key.pem"\nclient_ca = "terminal-ca.pem"\n'


def access(tmp_path: Path, text: str, offices=SHIPPED.ids):
    write_tls(tmp_path)
    f = tmp_path / "access.toml"
    f.write_text(TLS + text)
    return load_access_config(f, offices)


def access_problems(tmp_path: Path, text: str, offices=SHIPPED.ids) -> list[str]:
    with pytest.raises(AccessConfigError) as err:
        access(tmp_path, text, offices)
    prefix = f"access file {tmp_path / 'access.toml'}: "
    assert all(p.startswith(prefix) for p in err.value.problems)
    return [p.removeprefix(prefix) for p in err.value.problems]


def test_a_valid_access_file_reads_as_before(tmp_path):
    a = access(
        tmp_path,
        '[throttle]\nmax_distinct_cards = 3\n[terminals.naka-01]\nrole = "ward_office"\noffice = "naka-ward-office"\n'
        '[terminals.kiosk-01]\nrole = "convenience_store"\nrevoked = true\n',
    )
    assert a.throttle.max_distinct_cards == 3
    assert a.terminals["naka-01"].office == "naka-ward-office" and a.terminals["kiosk-01"].revoked


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            '[terminals.x]\nrole = "auditor"\nrevokd = true\n',
            "terminals.x.revokd: unknown key (did you mean revoked?)",
        ),
        (
            "[throttle]\nmax_distinct_card = 3\n",
            "throttle.max_distinct_card: unknown key (did you mean max_distinct_cards?)",
        ),
        ('[terminal.x]\nrole = "auditor"\n', "terminal: unknown section (did you mean terminals?)"),
        ("[throttle]\nmax_distinct_cards = 0\n", "throttle.max_distinct_cards: must be a whole number from 1 to 100,000, not 0"),
        (
            "[throttle]\nwindow_seconds = 1e9\n",
            "throttle.window_seconds: must be a whole number from 1 to 2,592,000, not 1000000000.0",
        ),
        (
            '[throttle]\npenalty_seconds = "900"\n',
            "throttle.penalty_seconds: must be a whole number from 1 to 2,592,000, not '900'",
        ),
        ('[terminals.x]\nrole = "auditor"\nrevoked = "yes"\n', "terminals.x.revoked: must be true or false, not 'yes'"),
        ('[terminals.x]\nrole = "development"\n', "terminals.x.role: must be one of medical_reader"),
        ('[terminals.x]\nrole = "ward_ofice"\noffice = "naka-ward-office"\n', "(did you mean ward_office?)"),
        ("[terminals.x]\n", "terminals.x.role: is required"),
        ('[terminals.x]\nrole = "ward_office"\n', "terminals.x: a counter terminal (ward_office) needs its office"),
        (
            '[terminals.x]\nrole = "ward_office"\noffice = "naka-ward"\n',
            f"terminals.x.office: 'naka-ward' is not an office of {DEFAULT_OFFICES_FILE} (did you mean naka-ward-office?)",
        ),
        (
            '[terminals.x]\nrole = "convenience_store"\nchain = "seven"\n',
            f"terminals.x.chain: 'seven' is not a chain of {DEFAULT_OFFICES_FILE} (it has no chains)",
        ),
        (
            '[terminals.x]\nrole = "auditor"\noffice = "naka-ward-office"\n',
            "terminals.x.office: only a counter terminal has an office",
        ),
        ('[terminals.x]\nrole = "auditor"\nchain = "seven"\n', "terminals.x.chain: only a convenience_store terminal"),
        ('[terminals."a b"]\nrole = "auditor"\n', "terminals.a b: the terminal id must be 1 to 64"),
    ],
)
def test_each_mistake_in_the_access_rules_is_named(tmp_path, text, problem):
    problems = access_problems(tmp_path, text)
    assert any(p.startswith(problem) or problem in p for p in problems), problems


def test_every_problem_of_the_access_rules_at_once(tmp_path):
    problems = access_problems(
        tmp_path,
        "[throttle]\nmax_distinct_card = 3\nwindow_seconds = 0\n"
        '[terminal.x]\nrole = "auditor"\n'
        '[terminals.kiosk-1]\nrole = "convenience_store"\nchain = "seven"\nrevokd = true\n'
        '[terminals.naka-1]\nrole = "ward_office"\noffice = "naka"\n',
    )
    assert [p.split(":")[0] for p in problems] == [
        "terminal",
        "terminals.kiosk-1.revokd",
        "terminals.kiosk-1.chain",  # checked although the entry has another mistake
        "terminals.naka-1.office",
        "throttle.max_distinct_card",
        "throttle.window_seconds",
    ]


def test_a_chain_of_the_offices_file_is_known(tmp_path):
    (tmp_path / "offices.toml").write_text("[chains.seven]\nresets_user_certificate = true\n")
    offices = load_offices(tmp_path / "offices.toml")
    a = access(tmp_path, '[terminals.k]\nrole = "convenience_store"\nchain = "seven"\n', offices.ids)
    assert a.terminals["k"].chain == "seven"
    assert offices.policy(ThrottlePolicy(), date(2026, 6, 1)).chain("seven").resets_user_certificate


def test_the_tls_files_are_read_parsed_and_matched(tmp_path):
    write_tls(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    write_tls(other)
    f = tmp_path / "access.toml"
    f.write_text('[tls]\ncert = "server.pem"\nkey = "other/server-key.pem"\nclient_ca = "nowhere.pem"\n')
    with pytest.raises(AccessConfigError) as err:
        load_access_config(f)
    assert [p.split(": ", 2)[1:] for p in err.value.problems] == [
        ["tls.client_ca", f"cannot read {tmp_path / 'nowhere.pem'}: No such file or directory"],
    ]
    f.write_text('[tls]\ncert = "server.pem"\nkey = "other/server-key.pem"\nclient_ca = "server-key.pem"\n')
    with pytest.raises(AccessConfigError) as err:
        load_access_config(f)
    assert [p.split(": ", 2)[1:] for p in err.value.problems] == [
        ["tls.client_ca", f"{tmp_path / 'server-key.pem'} is not a PEM certificate"],
        ["tls", f"the key {tmp_path / 'other/server-key.pem'} is not the key of the certificate {tmp_path / 'server.pem'}"],
    ]
    f.write_text('[tls]\ncert = "server.pem"\nkey = "server.pem"\nclient_ca = "terminal-ca.pem"\n')
    with pytest.raises(AccessConfigError, match=r"tls\.key: .* is not a PEM private key"):
        load_access_config(f)
    f.write_text("[tls]\ncert = 'server.pem'\n")
    with pytest.raises(AccessConfigError) as err:
        load_access_config(f)
    assert [p.split(": ", 2)[1:] for p in err.value.problems] == [["tls.key", "is required"], ["tls.client_ca", "is required"]]


def test_the_access_tables_in_the_configuration_file_are_named_with_access(tmp_path):
    write_tls(tmp_path)
    f = tmp_path / "pinlife.toml"
    f.write_text(
        "[access.tls]\ncert = 'server.pem'\nkey = 'server-key.pem'\nclient_ca = 'terminal-ca.pem'\n"
        "[access.terminals.x]\nrole = 'auditor'\nrevokd = true\n"
    )
    with pytest.raises(AccessConfigError) as err:
        access_from_settings(load({}, path=f))
    assert err.value.problems == ["access.terminals.x.revokd: unknown key (did you mean revoked?)"]


def test_the_offices_file_problems_come_with_the_access_rules(tmp_path):
    """access_from_settings (what serve calls) reads the offices file too:
    its problems, and the references to it, in one error."""
    write_tls(tmp_path)
    (tmp_path / "offices.toml").write_text("[offices.a]\nkind = 'ward_office'\nwards = ['a']\nname = 3\n")
    (tmp_path / "access.toml").write_text(TLS + "[terminals.x]\nrole = 'ward_office'\noffice = 'b'\n")
    f = tmp_path / "pinlife.toml"
    f.write_text("[access]\naccess_file = 'access.toml'\n[procedures]\noffices_file = 'offices.toml'\n")
    with pytest.raises(AccessConfigError) as err:
        access_from_settings(load({}, path=f))
    assert err.value.problems == [
        f"offices file {tmp_path / 'offices.toml'}: offices.a.name: must be a non-empty string, not 3",
        f"access file {tmp_path / 'access.toml'}: terminals.x.office: 'b' is not an office of "
        f"{tmp_path / 'offices.toml'} (it has a)",
    ]
    f.write_text("[procedures]\noffices_file = 'offices.toml'\n")  # development mode: the offices file still
    with pytest.raises(AccessConfigError, match="offices.a.name"):
        access_from_settings(load({}, path=f))


# -- the offices file -------------------------------------------------------------------------
OFFICE = "[offices.a]\nkind = 'ward_office'\nwards = ['naka']\n"


def offices_problems(tmp_path: Path, text: str) -> list[str]:
    f = tmp_path / "offices.toml"
    f.write_text(text)
    with pytest.raises(OfficesConfigError) as err:
        load_offices(f)
    prefix = f"offices file {f}: "
    assert all(p.startswith(prefix) for p in err.value.problems)
    return [p.removeprefix(prefix) for p in err.value.problems]


def test_the_shipped_offices_file_is_valid():
    assert len(SHIPPED.offices) == 20 and SHIPPED.procedures["inquiry_validity_days"] == 30
    assert load_policy(None, ThrottlePolicy(), date(2026, 6, 1)).calendar.offices == SHIPPED.offices


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            OFFICE + "hours = [{ days = ['mon'], open = '08:45', closes = '17:00' }]\n",
            "offices.a.hours[0].open: unknown key (did you mean opens?)",
        ),
        (
            OFFICE + "hours = [{ days = ['mon'], opens = '17:00', closes = '08:45' }]\n",
            "offices.a.hours[0]: closes (08:45) must be after",
        ),
        (
            OFFICE + "hours = [{ days = ['monday'], opens = '08:00', closes = '09:00' }]\n",
            "offices.a.hours[0].days: each must be one of",
        ),
        (
            OFFICE + "hours = [{ days = ['mon'], weeks = [6], opens = '08:00', closes = '09:00' }]\n",
            "offices.a.hours[0].weeks: each must",
        ),
        (OFFICE + "hours = [{ days = [], opens = '08:00', closes = '09:00' }]\n", "offices.a.hours[0].days: must not be empty"),
        (
            OFFICE + "hours = [{ days = ['mon'], opens = '8:00', closes = '09:00' }]\n",
            "offices.a.hours[0].opens: must be a time HH:MM",
        ),
        (OFFICE + "closures = [{ dates = ['02-30'] }]\n", "offices.a.closures[0].dates: each must be a date MM-DD, not '02-30'"),
        (OFFICE + "closures = [{}]\n", "offices.a.closures[0]: closes nothing"),
        (OFFICE + "closures = [{ day = ['wed'] }]\n", "offices.a.closures[0].day: unknown key (did you mean days?)"),
        (
            "[offices.a]\nkind = 'ward'\nwards = ['naka']\n",
            "offices.a.kind: must be one of ward_office, special_center, not 'ward'",
        ),
        ("[offices.a]\nkind = 'ward_office'\nwards = []\n", "offices.a.wards: must not be empty"),
        ("[offices.a]\nkind = 'ward_office'\nward = ['naka']\n", "offices.a.ward: unknown key (did you mean wards?)"),
        ("[office.a]\n", "office: unknown section (did you mean offices?)"),
        (OFFICE + "[offices.b]\nkind = 'special_center'\nwards = ['naka', 'nakaa']\n", "offices.b.wards: nakaa: no ward office"),
        (
            "[procedures]\ninquiry_validity_day = 3\n",
            "procedures.inquiry_validity_day: unknown key (did you mean inquiry_validity_days?)",
        ),
        (
            "[procedures]\nreservation_validity_hours = 0\n",
            "procedures.reservation_validity_hours: must be a whole number from 1 to 720",
        ),
        (
            "[procedures]\ninquiry_validity_days = 99999999999\n",
            "procedures.inquiry_validity_days: must be a whole number from 1 to 366",
        ),
        ("[stores]\nopens = '23:00'\ncloses = '06:30'\n", "stores: closes (06:30) must be after opens (23:00)"),
        ("[chains.seven]\nresets_user_certificates = true\n", "chains.seven.resets_user_certificates: unknown key (did you mean"),
    ],
)
def test_each_mistake_in_the_offices_file_is_named(tmp_path, text, problem):
    problems = offices_problems(tmp_path, text)
    assert any(p.startswith(problem) for p in problems), problems


def test_every_problem_of_the_offices_file_at_once(tmp_path):
    problems = offices_problems(
        tmp_path,
        "[procedures]\nrepeat_window_minutes = 0\n[stores]\nopens = '25:00'\n[officez.c]\n"
        "[offices.a]\nkind = 'ward_office'\nwards = ['naka']\nhours = [{ days = ['mon'], open = '08:00', closes = '09:00' }]\n",
    )
    assert [p.split(": ")[0] for p in problems] == [
        "officez",
        "procedures.repeat_window_minutes",
        "stores.opens",
        "offices.a.hours[0].open",
        "offices.a.hours[0].opens",
    ]


def test_nearest_suggests_only_a_close_name():
    assert nearest("revokd", ["role", "office", "chain", "revoked"]) == "revoked"
    assert nearest("colour", ["role", "office", "chain", "revoked"]) is None
