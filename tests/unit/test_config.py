"""Settings from the environment (service/config.py): defaults, and a clear
error for each bad value instead of a server that starts half-configured."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import pytest

from service.config import ConfigError, from_env


def test_defaults_are_a_loopback_development_server_with_the_writer_process():
    s = from_env({})
    assert (s.environment, s.listen, s.batch_max, s.writer, s.access_file) == (
        "development", "127.0.0.1:50051", 256, "process", None,
    )  # fmt: skip


def test_the_writer_can_run_on_a_thread():
    assert from_env({"PINLIFE_WRITER": "thread"}).writer == "thread"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PINLIFE_WRITER": "threads"}, "PINLIFE_WRITER must be process or thread"),
        ({"PINLIFE_BATCH_MAX": "0"}, "PINLIFE_BATCH_MAX must be at least 1"),
        ({"PINLIFE_BATCH_MAX": "many"}, "PINLIFE_BATCH_MAX must be an integer"),
        ({"PINLIFE_ENV": "staging"}, "PINLIFE_ENV must be development, test or production"),
        ({"PINLIFE_ENV": "production"}, "production requires mutual TLS"),
        ({"PINLIFE_LISTEN": "0.0.0.0:50051"}, "may only listen on loopback"),
        ({"PINLIFE_CLOCK": "tomorrow"}, "PINLIFE_CLOCK 'tomorrow': one of system, start"),
        ({"PINLIFE_CLOCK": "fixed:2027-01-09T10:30"}, "PINLIFE_CLOCK .*UTC offset"),
        ({"PINLIFE_CLOCK": "shift:soon"}, "PINLIFE_CLOCK 'shift:soon'"),
        ({"PINLIFE_ENV": "production", "PINLIFE_ACCESS_FILE": "access.toml", "PINLIFE_CLOCK": "shift:3600"},
         "production keeps the system clock"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env)


def test_the_service_clock_can_be_moved_outside_production():
    fixed = from_env({"PINLIFE_CLOCK": "fixed:2027-01-09T10:30:00+09:00"}).service_clock()
    assert fixed() == fixed() == datetime(2027, 1, 9, 1, 30, tzinfo=timezone.utc)
    shifted = from_env({"PINLIFE_CLOCK": "shift:-86400"}).service_clock()
    assert abs(shifted() - (datetime.now(timezone.utc) - timedelta(days=1))) < timedelta(seconds=5)
    started = from_env({"PINLIFE_CLOCK": "start:2027-01-09T10:30:00+09:00"}).service_clock()
    first = started()
    assert abs(first - datetime(2027, 1, 9, 1, 30, tzinfo=timezone.utc)) < timedelta(seconds=5)
    assert started() >= first  # it runs on from there
    assert from_env({}).service_clock().is_system and not shifted.is_system


def test_a_service_clock_survives_pickling_unchanged():
    """It crosses into the writer process as a value."""
    clock = from_env({"PINLIFE_CLOCK": "fixed:2027-01-09T10:30:00+09:00"}).service_clock()
    assert pickle.loads(pickle.dumps(clock)) == clock
