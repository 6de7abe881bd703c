"""The log set-up: one JSON object per line, the call's context merged into
every line, kept apart between concurrent calls, secrets redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import UTC, datetime

import pytest
import structlog

from pinlife.runtime import logs


@pytest.fixture
def lines():
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    yield lambda: [json.loads(line) for line in buf.getvalue().splitlines()]
    structlog.reset_defaults()
    logs.new_context()


def test_a_line_is_json_with_level_timestamp_context_and_redaction(lines):
    logs.new_context(rpc="VerifyPin", card="card-1")
    logs.bind_context(terminal="kiosk-7")
    structlog.get_logger().info(
        "rpc", status="OK", pin="5917", new_pin="3852", pin_type="signature", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    [line] = lines()
    assert line["event"] == "rpc" and line["level"] == "info" and line["status"] == "OK"
    assert (line["rpc"], line["card"], line["terminal"]) == ("VerifyPin", "card-1", "kiosk-7")
    assert line["pin"] == line["new_pin"] == "[redacted]"
    assert line["pin_type"] == "signature"  # names a PIN type, not a PIN
    assert line["at"] == "2026-01-02T03:04:05+00:00"
    assert datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).tzinfo is not None


def test_new_context_replaces_and_a_lines_own_values_win(lines):
    logs.new_context(rpc="A", card="card-1")
    logs.new_context(rpc="B")
    structlog.get_logger().info("x", rpc="explicit")
    [line] = lines()
    assert line["rpc"] == "explicit" and "card" not in line


def test_concurrent_tasks_keep_their_own_context(lines):
    log = structlog.get_logger()

    async def call(name: str, delay: float):
        logs.new_context(rpc=name)
        await asyncio.sleep(delay)
        logs.bind_context(terminal=f"t-{name}")
        await asyncio.sleep(delay)
        log.info("rpc")

    async def main():
        logs.new_context(process="server")
        await asyncio.gather(call("A", 0.02), call("B", 0.01))
        log.info("after")

    asyncio.run(main())
    got = {line["event"] + ":" + line.get("rpc", "-"): line for line in lines()}
    assert got["rpc:A"]["terminal"] == "t-A" and got["rpc:B"]["terminal"] == "t-B"
    assert "process" not in got["rpc:A"]  # an RPC starts with its own context
    assert got["after:-"]["process"] == "server" and "terminal" not in got["after:-"]


# -- the standard library's loggers (gRPC, SQLAlchemy, Alembic) -----------------
@pytest.fixture
def library_lines():
    """The log configured at a level; the lines written, parsed."""
    buf = io.StringIO()

    def configure(level: str):
        buf.seek(0)
        buf.truncate()
        logs.configure("json", level, stream=buf)
        return lambda: [json.loads(line) for line in buf.getvalue().splitlines()]

    root = logging.getLogger()
    saved = root.level, logging.getLogger("sqlalchemy").level
    yield configure
    structlog.reset_defaults()
    logs.new_context()
    for handler in [h for h in root.handlers if isinstance(h, logs._LibraryHandler)]:
        root.removeHandler(handler)
    root.setLevel(saved[0])
    logging.getLogger("sqlalchemy").setLevel(saved[1])


def test_library_records_are_the_same_json_lines_with_their_logger_and_the_call_context(library_lines):
    lines = library_lines("debug")
    logs.new_context(rpc="VerifyPin")
    logging.getLogger("grpc._cython.cygrpc").warning("Unexpected error %s", "x")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade %s -> %s", "0001", "0002")
    try:
        raise OSError("disk full")
    except OSError:
        logging.getLogger("sqlalchemy.pool.impl.QueuePool").error("Exception during reset", exc_info=True)
    structlog.get_logger().info("ours")
    grpc_line, alembic, sqlalchemy, ours = lines()
    assert grpc_line["logger"] == "grpc._cython.cygrpc" and grpc_line["level"] == "warning"
    assert grpc_line["event"] == "Unexpected error x" and grpc_line["rpc"] == "VerifyPin"
    assert alembic["event"] == "Running upgrade 0001 -> 0002" and alembic["level"] == "info"
    assert sqlalchemy["level"] == "error" and "OSError: disk full" in sqlalchemy["exception"]
    assert set(ours) == {"event", "level", "timestamp", "rpc"}  # ours as before: no logger key
    for line in (grpc_line, alembic, sqlalchemy):
        assert datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).tzinfo is not None
        assert set(line) >= {"event", "level", "timestamp", "logger"}


def test_the_level_applies_to_ours_and_the_libraries(library_lines):
    """The libraries' INFO and DEBUG lines only at debug: a command's stderr stays its one line."""
    lines = library_lines("info")
    logging.getLogger("alembic.runtime.plugins").info("hidden")
    logging.getLogger("grpc").warning("shown")
    structlog.get_logger().info("shown")
    structlog.get_logger().debug("hidden")
    assert [(line["event"], line["level"]) for line in lines()] == [("shown", "warning"), ("shown", "info")]

    lines = library_lines("warning")
    logging.getLogger("alembic.runtime.migration").info("hidden")
    logging.getLogger("grpc").warning("shown")
    structlog.get_logger().info("hidden")
    structlog.get_logger().error("shown")
    assert [(line["event"], line["level"]) for line in lines()] == [("shown", "warning"), ("shown", "error")]

    lines = library_lines("debug")
    logging.getLogger("grpc.aio").debug("shown")
    logging.getLogger("alembic.runtime.migration").info("shown")
    structlog.get_logger().debug("shown")
    assert [(line["event"], line["level"]) for line in lines()] == [("shown", "debug"), ("shown", "info"), ("shown", "debug")]


def test_sqlalchemy_never_logs_statements_whatever_the_level(library_lines):
    """Its INFO lines are SQL with parameters, which include verifiers."""
    lines = library_lines("debug")
    logging.getLogger("sqlalchemy.engine.Engine").info("INSERT INTO pins ... ('digest')")
    logging.getLogger("sqlalchemy.engine.Engine").warning("shown")
    assert [line["event"] for line in lines()] == ["shown"]


def test_alembic_migrations_log_through_structlog(library_lines, tmp_path):
    from pinlife.store.migrate import upgrade

    lines = library_lines("debug")
    upgrade(f"sqlite:///{tmp_path / 'm.db'}", "0001")
    migration = [line for line in lines() if line.get("logger") == "alembic.runtime.migration"]
    steps = [line for line in migration if line["event"].startswith("Running upgrade")]
    assert steps and all(line["level"] == "info" for line in steps), migration


def test_a_configured_again_log_has_one_library_handler(library_lines):
    library_lines("info")
    library_lines("info")
    assert sum(isinstance(h, logs._LibraryHandler) for h in logging.getLogger().handlers) == 1


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown log level"):
        logs.level_number("verbose")
    assert logs.level_number("warning") == logging.WARNING
