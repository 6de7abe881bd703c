"""`make demo` (python -m tools.demo): the seed story through the real API
with the shipped CLI, against its own server. It must play to the end and
say each step's key facts; and when an answer is not the story's, it must
say so, clean up and exit 1, without a traceback.

The whole story runs in this process (tools.demo.main, its `pinlife`
commands through harness.cli, its server a ThreadedServer made from the
demo's own settings): some thirty commands, a second each as processes. Its
one wait, for the first checkpoint the server signs (every 10 s while the
log grows), is the server signing it at once. The story stopped early runs
as `make demo` does: `python -m tools.demo` in its own process, with its
commands and its server (`pinlife serve`) as processes too."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pinlife.config.settings import from_env
from pinlife.keys.ring import KeyRing
from pinlife.runtime import logs
from tests.e2e.harness import ThreadedServer, cli
from tools import demo as demo_tool

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 90

pytestmark = pytest.mark.slow


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.demo", *args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def run_demo_here(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """tools.demo.main(args) in this process: the same story, the same
    checks of each answer, the same output (on stderr, the server's log
    lines written while a command waited for its answer)."""
    servers: list[ThreadedServer] = []

    def pinlife(self, *argv: str, show: bool = True) -> demo_tool.Reply:
        if show:
            demo_tool.command(["pinlife", *argv])
        done = cli(*argv, env=self.env)
        return demo_tool.Reply(done.returncode, done.stdout, done.stderr)

    def start_server(self) -> bool:
        """`PINLIFE_CLOCK=... pinlife serve`, as a ThreadedServer (the thread
        writer: the writer process is tested in tests/store)."""
        self.stop_server()
        settings = from_env({**self.env, "PINLIFE_CLOCK": self.clock, "PINLIFE_WRITER": "thread"})
        self.started = time.monotonic()
        servers.append(ThreadedServer(settings.database_url, KeyRing.load(settings.key_file), settings=settings))
        return True

    def stop_server(self) -> None:
        while servers:
            servers.pop().close()

    def sleep(seconds: float) -> None:
        """The demo waits for the server's next checkpoint: the server signs it now."""
        servers[-1].server.instance.signer.sign()

    monkeypatch.setattr(demo_tool.Demo, "pinlife", pinlife)
    monkeypatch.setattr(demo_tool.Demo, "start_server", start_server)
    monkeypatch.setattr(demo_tool.Demo, "stop_server", stop_server)
    monkeypatch.setattr(demo_tool, "time", SimpleNamespace(**{**vars(time), "sleep": sleep}))
    logs.configure("json", stream=io.StringIO())  # the server's log lines: not in the demo's output
    code = demo_tool.main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["python", "-m", "tools.demo", *args], code, out, err)


def cleaned_up(out: str) -> None:
    """The temporary directory is gone and the server no longer listens."""
    tmp = re.search(r"everything lives in (\S+);", out)
    assert tmp, out
    assert not Path(tmp[1]).exists()
    port = re.search(r"PINLIFE_LISTEN=127\.0\.0\.1:(\d+)", out)
    assert port, out
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port[1]))) != 0, "the demo's server still listens"


def test_the_seed_story_plays_to_the_end(monkeypatch, capsys):
    done = run_demo_here(monkeypatch, capsys)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in out + done.stderr

    def step(number: int) -> str:
        """The text of step N, up to the next step, its lines joined (answers wrap)."""
        m = re.search(rf"^{number:>2}\. (.*?)(?=^\s?\d{{1,2}}\. |^The story played|^The server is stopped)", out, re.M | re.S)
        assert m, f"no step {number} in:\n{out}"
        return " ".join(m[1].split())

    # the commands are the README's, as typed
    assert "$ pinlife --office naka-ward-office enroll card-0002 --ward naka" in out
    assert out.count("$ pinlife --terminal clinic-reader-07 verify card-0002 user_certificate 9999") == 3
    # locked at the clinic, told where and when
    assert "→ enrolled:" in step(1) and "all active" in step(1)
    locked = step(2)
    assert "wrong PIN; 2 tries left" in locked and "the next wrong one locks it" in locked
    assert re.search(
        r"→ locked; go to Naka Ward Office, open now \(08:45–17:00\); or My Number Card Special Center \(Yokohama Station\), opens today 11:30",
        locked,
    )
    assert "the reader shows:" in locked
    assert "→ still locked" in step(3)
    # the counter: refused without the card, reset with it
    assert "refused, nothing changed: the holder's My Number Card is required" in step(4)
    assert "--doc my_number_card" in step(5) and "→ reset done:" in step(5)
    assert "→ OK" in step(6)
    # the signature PIN at a convenience store
    assert "convenience store reset, or counter reset" in step(7)
    assert "→ reserved, proved with the user-certificate PIN" in step(8)
    assert "$ pinlife --terminal kiosk-0042 store-reset card-0002 signature 5678 NEW789" in step(9)
    assert "→ store reset done" in step(9)
    # the proxy's two visits
    assert "proxy-request" in step(11) and re.search(r"one-time code \(\d{8}\)", step(11))
    assert "proxy-complete" in step(12) and "→ proxy reset done" in step(12)
    # a lost card
    assert "→ card suspended" in step(13)
    assert "resume it at Naka Ward Office" in step(14)
    assert "→ card active again" in step(15) and "→ OK at the clinic" in step(15)
    # the auditor
    history = step(16)
    assert "$ pinlife audit history card-0002" in history
    assert re.search(r"PinLocked\s+user certificate\s+clinic-reader-07\s+locked", history)
    assert re.search(r"PinReset\s+signature\s+kiosk-0042\s+success", history)
    assert re.search(r"CardSuspended\s+call-centre\s+other", history)
    assert "→ history shown: 26 events, 2 locks, 3 resets" in history
    assert "$ pinlife audit checkpoint" in step(17) and "kept in" in step(17)
    assert "$ pinlife audit verify" in step(18)
    assert re.search(r"→ intact: \d+ events and 1 card checked", step(18))
    assert "The story played as docs/procedures.md tells it." in out
    cleaned_up(out)


def test_an_answer_off_the_story_stops_it_with_what_was_expected():
    """On the first Saturday the Naka Ward Office is closed: its counter
    cannot even enroll the card (a counter acts only in its office's hours),
    which is not the story's. As `make demo` runs: the demo, its commands and
    its server as processes."""
    done = run_demo("--clock", "start:2026-12-05T10:00:00+09:00")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "Traceback" not in out + done.stderr
    assert "The story broke at step 1:" in out
    assert re.search(r"expected: the card enrolled\n\s+came:\s+exit 1: FAILED_PRECONDITION: .*closed now", out), out
    assert "The story played" not in out
    cleaned_up(out)
