"""The configuration (service/config/settings.py): the file, the variables named
after its keys, defaults, and every problem at once, each naming its key,
instead of a server that starts half-configured."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pinlife.config.access import AccessConfigError, access_from_settings
from pinlife.config.settings import KEYS, ConfigError, from_env, load
from pinlife.domain.access import Role
from pinlife.domain.rate import DEFAULT_RATES, RatePolicy
from tests.unit.test_config_files import write_tls


def test_defaults_are_a_loopback_development_server_with_the_writer_process():
    s = from_env({})
    assert (s.environment, s.listen, s.batch_max, s.writer, s.access_file) == (
        "development",
        "127.0.0.1:50051",
        256,
        "process",
        None,
    )


def test_the_writer_can_run_on_a_thread():
    assert from_env({"PINLIFE_WRITER": "thread"}).writer == "thread"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PINLIFE_WRITER": "threads"}, r"PINLIFE_WRITER \(\[store\] writer\) must be process or thread, not 'threads'"),
        ({"PINLIFE_BATCH_MAX": "0"}, r"PINLIFE_BATCH_MAX \(\[store\] batch_max\) must be at least 1"),
        ({"PINLIFE_BATCH_MAX": "many"}, r"PINLIFE_BATCH_MAX \(\[store\] batch_max\) must be an integer"),
        ({"PINLIFE_ENV": "staging"}, r"PINLIFE_ENV \(\[server\] env\) must be development, test or production"),
        ({"PINLIFE_ENV": "production"}, "production requires mutual TLS"),
        ({"PINLIFE_LISTEN": "0.0.0.0:50051"}, "may only listen on loopback"),
        ({"PINLIFE_CLOCK": "tomorrow"}, r"PINLIFE_CLOCK \(\[server\] clock\) 'tomorrow': one of system, start"),
        ({"PINLIFE_CLOCK": "fixed:2027-01-09T10:30"}, "PINLIFE_CLOCK .*UTC offset"),
        ({"PINLIFE_CLOCK": "shift:soon"}, r"PINLIFE_CLOCK \(\[server\] clock\) 'shift:soon'"),
        ({"PINLIFE_METRICS_LISTEN": "9464"}, r"PINLIFE_METRICS_LISTEN \(\[server\] metrics_listen\) must be HOST:PORT"),
        ({"PINLIFE_GRACE_SECONDS": "-1"}, r"PINLIFE_GRACE_SECONDS \(\[server\] grace_seconds\) must be at least 0"),
        (
            {"PINLIFE_REPLAY_WINDOW_HOURS": "soon"},
            r"PINLIFE_REPLAY_WINDOW_HOURS \(\[procedures\] replay_window_hours\) must be a number",
        ),
        (
            {"PINLIFE_ENV": "production", "PINLIFE_ACCESS_FILE": "access.toml", "PINLIFE_CLOCK": "shift:3600"},
            "production keeps the system clock",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env)


def test_the_service_clock_can_be_moved_outside_production():
    fixed = from_env({"PINLIFE_CLOCK": "fixed:2027-01-09T10:30:00+09:00"}).service_clock()
    assert fixed() == fixed() == datetime(2027, 1, 9, 1, 30, tzinfo=UTC)
    shifted = from_env({"PINLIFE_CLOCK": "shift:-86400"}).service_clock()
    assert abs(shifted() - (datetime.now(UTC) - timedelta(days=1))) < timedelta(seconds=5)
    started = from_env({"PINLIFE_CLOCK": "start:2027-01-09T10:30:00+09:00"}).service_clock()
    first = started()
    assert abs(first - datetime(2027, 1, 9, 1, 30, tzinfo=UTC)) < timedelta(seconds=5)
    assert started() >= first  # it runs on from there
    assert from_env({}).service_clock().is_system and not shifted.is_system


def test_a_service_clock_survives_pickling_unchanged():
    """It crosses into the writer process as a value."""
    clock = from_env({"PINLIFE_CLOCK": "fixed:2027-01-09T10:30:00+09:00"}).service_clock()
    assert pickle.loads(pickle.dumps(clock)) == clock


# -- the file ------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "pinlife.example.toml"


def test_the_example_file_loads_and_documents_every_key():
    s = load({}, path=EXAMPLE)
    assert (s.env, s.listen, s.metrics_listen, s.writer, s.tls) == (
        "development",
        "127.0.0.1:50051",
        "127.0.0.1:9464",
        "process",
        False,
    )
    assert s.key_file == ROOT / "var/dev-keys.json"  # taken from the file's folder
    text = EXAMPLE.read_text()
    for key in KEYS:
        assert f"\n{key.name} = " in text, f"{key.name} is not in the example"
    assert {f"[{k.section}]" for k in KEYS} <= set(text.splitlines())


def test_a_variable_overrides_its_key_and_paths_in_the_file_are_from_its_folder(tmp_path):
    f = tmp_path / "pinlife.toml"
    f.write_text(
        '[store]\nbatch_max = 64\ndatabase_url = "sqlite:///x.db"\n[keys]\nkey_file = "keys.json"\n[procedures]\nreplay_window_hours = 2\n'
    )
    s = load({"PINLIFE_CONFIG": str(f)})
    assert (s.batch_max, s.key_file, s.replay_window_hours) == (64, tmp_path / "keys.json", 2.0)
    s = load({"PINLIFE_CONFIG": str(f), "PINLIFE_BATCH_MAX": "8", "PINLIFE_KEY_FILE": "rel/keys.json"})
    assert (s.batch_max, s.key_file) == (8, Path("rel/keys.json"))  # a variable's path is the caller's


def test_request_rates_per_role_from_the_file_and_the_environment(tmp_path):
    f = tmp_path / "pinlife.toml"
    f.write_text('[rate]\nrate_medical_reader = "2/s burst 5"\nrate_auditor = "off"\n')
    s = load({"PINLIFE_RATE_CALL_CENTER": "30/h burst 3"}, path=f)
    rates = s.rates()
    assert rates["medical_reader"] == RatePolicy(2.0, 5)
    assert rates["auditor"] is None  # off: no limit
    assert rates["call_center"] == RatePolicy(30 / 3600, 3)
    assert rates["ward_office"] == DEFAULT_RATES[Role.WARD_OFFICE]
    assert rates["development"] is None  # development mode: off unless set
    assert load({}, path=EXAMPLE).rates() == {r.value: DEFAULT_RATES[r] for r in Role}  # the example shows the defaults
    with pytest.raises(ConfigError) as err:
        load({"PINLIFE_RATE_KIOSK": "x", "PINLIFE_RATE_SELF_SERVICE": "fast", "PINLIFE_RATE_AUDITOR": "0/s burst 1"})
    assert sorted(err.value.problems) == [
        "PINLIFE_RATE_AUDITOR ([rate] rate_auditor) needs a positive rate and a burst of at least 1, not '0/s burst 1'",
        'PINLIFE_RATE_SELF_SERVICE ([rate] rate_self_service) must be "N/s|min|h burst B" (e.g. "12/min burst 20") '
        "or \"off\", not 'fast'",
    ]


def test_every_problem_is_reported_at_once_each_naming_its_key(tmp_path):
    f = tmp_path / "pinlife.toml"
    f.write_text('[server]\nlisten = "0.0.0.0:1"\nmetrics_listen = 5\ngrace_seconds = "x"\n[store]\nwriterr = "x"\n[bogus]\n')
    with pytest.raises(ConfigError) as err:
        load({"PINLIFE_BATCH_MAX": "0"}, path=f)
    assert sorted(err.value.problems) == sorted(
        [
            "[bogus]: unknown section (one of access, audit, keys, procedures, rate, server, store, telemetry)",
            "[store] writerr: unknown key (did you mean writer?)",
            "PINLIFE_METRICS_LISTEN ([server] metrics_listen) must be a string, not 5",
            "PINLIFE_GRACE_SECONDS ([server] grace_seconds) must be a number, not 'x'",
            "PINLIFE_BATCH_MAX ([store] batch_max) must be at least 1",
            "PINLIFE_LISTEN ([server] listen): plain-text development mode may only listen on loopback, not '0.0.0.0:1'",
        ]
    )


@pytest.mark.parametrize(
    "text, message",
    [(None, "does not exist"), ("[server\n", "is not valid TOML"), ("server = 1\n", r"\[server\]: must be a table")],
)
def test_an_unreadable_file_is_one_problem(tmp_path, text, message):
    f = tmp_path / "pinlife.toml"
    if text is not None:
        f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load({"PINLIFE_CONFIG": str(f)})


def test_access_rules_given_in_the_file_are_mutual_tls_and_read_from_its_folder(tmp_path):
    f = tmp_path / "pinlife.toml"
    f.write_text(
        '[access.tls]\ncert = "s.pem"\nkey = "k.pem"\nclient_ca = "ca.pem"\n[access.terminals.audit-01]\nrole = "auditor"\n'
    )
    s = load({}, path=f)
    assert s.tls and s.access_tables["terminals"] == {"audit-01": {"role": "auditor"}}
    with pytest.raises(AccessConfigError, match=r"access\.tls\.cert: cannot read .*s\.pem"):
        access_from_settings(s)
    write_tls(tmp_path, cert="s.pem", key="k.pem", client_ca="ca.pem")
    access = access_from_settings(s)
    assert access.tls.key_path == tmp_path / "k.pem" and set(access.terminals) == {"audit-01"}
    both = tmp_path / "both.toml"
    both.write_text('[access]\naccess_file = "a.toml"\n[access.tls]\ncert = "s.pem"\n')
    with pytest.raises(ConfigError, match="not both"):
        load({}, path=both)
