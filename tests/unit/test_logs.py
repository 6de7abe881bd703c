"""The log set-up: one JSON object per line, the call's context merged into
every line, kept apart between concurrent calls, secrets redacted."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import pytest
import structlog

from service.runtime import logs


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
