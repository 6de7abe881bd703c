"""Settings from the environment (service/config.py): defaults, and a clear
error for each bad value instead of a server that starts half-configured."""

from __future__ import annotations

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
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env)
