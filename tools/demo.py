"""`make demo` (python -m tools.demo): the seed story (docs/procedures.md), played
through the real API with the shipped CLI, as a person would read it.

A server on a throwaway SQLite store, its service clock started on a
Tuesday morning in Tokyo (PINLIFE_CLOCK=start:..., so it runs on from
there); then, one step at a time: what happens, the command a person would
type (`$ pinlife ...`, run as `python -m pinlife.cli ...`), and the answer
condensed from the command's own JSON. Each answer is checked against what
the story expects; at the first that differs the demo says what it expected
and what came, stops the server and exits 1. The server is stopped
(SIGTERM) and the temporary directory removed in every case.

    python -m tools.demo [--clock start:2026-12-01T10:00:00+09:00]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from pinlife.domain.calendar import TOKYO, Calendar
from pinlife.runtime.clock import ClockSettingError, ServiceClock

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLOCK = "start:2026-12-01T10:00:00+09:00"  # a Tuesday: ward offices are open
CARD = "card-0002"
OFFICE = "naka-ward-office"
CALL_TIMEOUT = 30  # seconds for one CLI command
START_TIMEOUT = 30  # seconds for the server to report SERVING
WIDTH = 100


class StoryBroke(Exception):
    """An answer the story did not expect."""

    def __init__(self, expected: str, came: str) -> None:
        super().__init__(f"expected {expected}; came {came}")
        self.expected, self.came = expected, came


@dataclass
class Reply:
    code: int
    out: str
    err: str

    def json(self, expected: str) -> dict:
        """The command's JSON answer (exit 0 expected)."""
        if self.code != 0:
            raise StoryBroke(expected, self.said())
        try:
            return json.loads(self.out)
        except ValueError:
            raise StoryBroke(f"{expected} (as JSON)", self.said()) from None

    def lines(self, expected: str) -> list[dict]:
        """JSON Lines (exit 0 expected)."""
        if self.code != 0:
            raise StoryBroke(expected, self.said())
        try:
            return [json.loads(line) for line in self.out.splitlines() if line.strip()]
        except ValueError:
            raise StoryBroke(f"{expected} (as JSON Lines)", self.said()) from None

    def said(self) -> str:
        """What the command said, in one line: its error, else its output."""
        text = " ".join((self.err.strip() if self.code != 0 and self.err.strip() else self.out.strip()).split())
        text = text.removeprefix("error: ").removeprefix("pinlife: ")
        return (f"exit {self.code}: " if self.code else "") + (text[:400] + ("…" if len(text) > 400 else "") or "nothing")


# -- saying it -----------------------------------------------------------------------
def say(text: str = "", indent: int = 0, prefix: str = "") -> None:
    if not text:
        print(flush=True)
        return
    print(
        textwrap.fill(
            text,
            WIDTH,
            initial_indent=" " * indent + prefix,
            subsequent_indent=" " * (indent + len(prefix)),
            break_on_hyphens=False,
            break_long_words=False,
        ),
        flush=True,
    )


def command(argv: list[str], indent: int = 3, then: str = "") -> None:
    """A command as typed (then: a shell word such as &), continued with a backslash where it is long."""
    lines, line = [], " " * indent + "$"
    for word in [*map(shlex.quote, argv), *([then] if then else [])]:
        if len(line) + 1 + len(word) > WIDTH - 2 and line.strip() != "$":
            lines.append(line + " \\")
            line = " " * (indent + 4)
        else:
            line += " "
        line += word
    print("\n".join([*lines, line]), flush=True)


def heading(text: str) -> None:
    say()
    say(text)
    say("-" * min(len(text), WIDTH))


def short(enum_value: str, prefix: str) -> str:
    """PIN_TYPE_USER_CERTIFICATE -> user certificate."""
    return enum_value.removeprefix(prefix).lower().replace("_", " ")


def pin_name(enum_value: str) -> str:
    return {
        "PIN_TYPE_USER_CERTIFICATE": "user-certificate PIN",
        "PIN_TYPE_SIGNATURE": "signature PIN",
        "PIN_TYPE_RESIDENT_REGISTRY": "resident-registry PIN",
        "PIN_TYPE_CARD_INFO_INPUT_SUPPORT": "card-info PIN",
    }.get(enum_value, enum_value)


def tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'}"


def instant(text: str) -> datetime:
    """A proto3 JSON timestamp ("2026-12-01T01:00:04.561283Z")."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the demo ------------------------------------------------------------------------
class Demo:
    def __init__(self, clock: str) -> None:
        self.clock = clock
        self.service_clock = ServiceClock.parse(clock)  # refuses a malformed setting before anything starts
        self.tmp = Path(tempfile.mkdtemp(prefix="pinlife-demo-"))
        self.server: subprocess.Popen | None = None
        self.server_log: IO[bytes] | None = None
        self.started = 0.0  # time.monotonic() when the server process started
        # Only the demo's own settings: none of a shell's PINLIFE_ variables (a TLS client, another store).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}
        self.env.update(
            PINLIFE_ENV="development",
            PINLIFE_DATABASE_URL=f"sqlite:///{self.tmp / 'pinlife.db'}",
            PINLIFE_KEY_FILE=str(self.tmp / "dev-keys.json"),
            PINLIFE_AUDIT_CHECKPOINTS=str(self.tmp / "kept.jsonl"),
            PINLIFE_LOG_FORMAT="json",
        )
        self.steps = 0
        self.calendar: Calendar | None = None

    # the service clock, as the server sees it (started when the server started)
    def now(self) -> datetime:
        if self.service_clock.fixed is not None:
            return self.service_clock.fixed
        kind, _, value = self.clock.partition(":")
        if kind == "start":
            ran = time.monotonic() - self.started if self.started else 0.0
            return datetime.fromisoformat(value).astimezone(UTC) + timedelta(seconds=ran)
        return self.service_clock()

    def today_text(self) -> str:
        now = self.now().astimezone(TOKYO)
        return f"{now:%A} {now.day} {now:%B %Y}, {now:%H:%M}"

    def when(self, at: datetime) -> str:
        """A time as a person in Tokyo reads it: "today 11:30", "Wed 2 Dec 08:45"."""
        local, today = at.astimezone(TOKYO), self.now().astimezone(TOKYO).date()
        if local.date() == today:
            return f"today {local:%H:%M}"
        return (
            f"{local:%a} {local.day} {local:%b %Y %H:%M}"
            if local.year != today.year
            else f"{local:%a} {local.day} {local:%b %H:%M}"
        )

    def hours_today(self, office_id: str) -> str:
        """The office's hours on the service clock's day, from the same offices
        file the server reads (the answer says where and when it opens, not
        when it closes)."""
        if self.calendar is None:
            from pinlife.config.offices import load_policy
            from pinlife.domain.policy import ThrottlePolicy

            self.calendar = load_policy(None, ThrottlePolicy(), self.now().astimezone(TOKYO).date()).calendar
        office = self.calendar.offices.get(office_id)
        if office is None:
            return ""
        spans = self.calendar.intervals(office, self.now().astimezone(TOKYO).date())
        return ", ".join(f"{a:%H:%M}–{b:%H:%M}" for a, b in spans)

    # running the CLI
    def pinlife(self, *argv: str, show: bool = True) -> Reply:
        """Run `pinlife ARGV` (python -m pinlife.cli), print the command as a person types it."""
        if show:
            command(["pinlife", *argv])
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pinlife.cli", *argv],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=CALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise StoryBroke(f"an answer within {CALL_TIMEOUT} s", "none (the command was stopped)") from None
        return Reply(done.returncode, done.stdout, done.stderr)

    def answer(self, text: str) -> None:
        say(text, indent=5, prefix="→ ")

    def step(self, text: str) -> None:
        self.steps += 1
        say()
        say(text, prefix=f"{self.steps:>2}. ")

    # setting up and tearing down
    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def set_up(self) -> None:
        heading(f"Setting up: a store, keys and a server, its clock at {self.today_text()} (Tokyo)")
        say(f"(everything lives in {self.tmp}; removed at the end)", indent=3)
        say()
        port = self.free_port()
        self.env["PINLIFE_LISTEN"] = f"127.0.0.1:{port}"
        shown = ("PINLIFE_DATABASE_URL", "PINLIFE_KEY_FILE", "PINLIFE_LISTEN", "PINLIFE_AUDIT_CHECKPOINTS")
        command(["export", *(f"{k}={self.env[k]}" for k in shown)])
        for argv, what in (
            (("dev-key", self.env["PINLIFE_KEY_FILE"]), "development keys written"),
            (("migrate",), "store migrated"),
        ):
            a = self.pinlife(*argv)
            if a.code != 0:
                raise StoryBroke(what, a.said())
            self.answer(what)
        for attempt in range(3):  # a free port can be taken between finding it and binding it
            if attempt:
                port = self.free_port()
                self.env["PINLIFE_LISTEN"] = f"127.0.0.1:{port}"
                self.answer(f"the server did not start (its log: {self.log_tail(1)}); again, on port {port}")
                command(["export", f"PINLIFE_LISTEN={self.env['PINLIFE_LISTEN']}"])
            command([f"PINLIFE_CLOCK={self.clock}", "pinlife", "serve"], then="&")
            if self.start_server():
                break
        else:
            raise StoryBroke("the server to start", f"it did not; its log: {self.log_tail()}")
        self.answer(f"serving on 127.0.0.1:{port}, its clock running from {self.today_text()}")

    def start_server(self) -> bool:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # a refused connection while it starts is expected, not news
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.stop_server()
        self.server_log = open(self.tmp / "server.log", "ab")
        self.started = time.monotonic()
        self.server = subprocess.Popen(
            [sys.executable, "-m", "pinlife.cli", "serve"],
            cwd=ROOT,
            env={**self.env, "PINLIFE_CLOCK": self.clock},
            stdin=subprocess.DEVNULL,
            stdout=self.server_log,
            stderr=subprocess.STDOUT,
        )
        channel = grpc.insecure_channel(self.env["PINLIFE_LISTEN"])
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            # types-grpcio-health-checking's HealthStub declares no methods: its Check is typed here.
            check: Callable[..., health_pb2.HealthCheckResponse] = stub.Check  # type: ignore[attr-defined]
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.server.poll() is None:
                try:
                    if check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        return True
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
            return False
        finally:
            channel.close()

    def log_tail(self, lines: int = 3) -> str:
        try:
            tail = (self.tmp / "server.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(none)"
        return " | ".join(tail) or "(empty)"

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None
        if self.server_log is not None:
            self.server_log.close()
            self.server_log = None

    def tear_down(self) -> None:
        self.stop_server()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the story ----------------------------------------------------------------------
    def where_to_go(self, recovery: dict) -> str:
        """The offices and times a locked or suspended answer names, as the holder reads them."""
        places = []
        for o in recovery.get("next_openings", []):
            at = instant(o["opens_at"])
            if at <= self.now() + timedelta(seconds=1):  # an open office's opening is "now"
                hours = self.hours_today(o.get("office_id", ""))
                places.append(f"{o['name']}, open now" + (f" ({hours})" if hours else ""))
            else:
                places.append(f"{o['name']}, opens {self.when(at)}")
        return "; or ".join(places)

    def expect_check(self, a: Reply, result: str, what: str) -> dict:
        check = a.json(what).get("check", {})
        if check.get("result") != result:
            raise StoryBroke(f"{what} ({result})", check.get("result") or a.said())
        return check

    def wrong_tries(self, terminal: str, pin_type: str, wrong: str, limit: int) -> dict:
        """Wrong PINs until the PIN locks; returns the locking answer's check."""
        for n in range(1, limit + 1):
            a = self.pinlife("--terminal", terminal, "verify", CARD, pin_type, wrong)
            if n < limit:
                check = self.expect_check(a, "CHECK_RESULT_WRONG_PIN", f"a wrong PIN, {tries(limit - n)} left")
                if check.get("remaining_tries") != limit - n:
                    raise StoryBroke(f"{tries(limit - n)} left", f"{tries(check.get('remaining_tries', 0))} left")
                final = check.get("final_try", False)
                if final != (n == limit - 1):
                    raise StoryBroke(f"final_try {n == limit - 1}", f"final_try {final}")
                self.answer(
                    f"wrong PIN; {tries(limit - n)} left" + ("; the reader warns: the next wrong one locks it" if final else "")
                )
            else:
                check = self.expect_check(a, "CHECK_RESULT_LOCKED", "the PIN locked by this try")
                if not check.get("locked_now"):
                    raise StoryBroke("locked_now: this try locked it", json.dumps(check)[:200])
        return check

    def play(self) -> None:
        heading(f"The seed story: card {CARD}, its holder living in Naka ward, Yokohama")

        # 1. enrol
        self.step("At the Naka Ward Office the card is issued with three PINs: resident registry, user certificate, signature.")
        a = self.pinlife(
            "--office",
            OFFICE,
            "enroll",
            CARD,
            "--ward",
            "naka",
            "--pin",
            "user_certificate=1234",
            "--pin",
            "signature=abc123",
            "--pin",
            "resident_registry=1234",
        )
        pins = a.json("the card enrolled").get("pins", [])
        if len(pins) != 3 or any(p.get("status") != "PIN_STATUS_ACTIVE" for p in pins):
            raise StoryBroke("three active PINs", a.said())
        self.answer(
            "enrolled: " + ", ".join(f"{pin_name(p['pin_type'])} ({tries(p['remaining_tries'])})" for p in pins) + ", all active"
        )

        # 2. locked at the clinic, told where and when
        self.step("At a clinic's card reader the patient mistypes the user-certificate PIN three times.")
        check = self.wrong_tries("clinic-reader-07", "user_certificate", "9999", 3)
        recovery = check.get("recovery", {})
        if recovery.get("route") != "RECOVERY_ROUTE_COUNTER" or not recovery.get("next_openings"):
            raise StoryBroke("the way out: a counter, with where and when", json.dumps(recovery)[:300])
        first = recovery["next_openings"][0]
        if first.get("office_id") != OFFICE:
            raise StoryBroke(f"the first place to go: {OFFICE}", first.get("office_id", "none"))
        self.answer(f"locked; go to {self.where_to_go(recovery)}")
        self.answer(f"the reader shows: \u201c{recovery.get('description', '')}\u201d")

        # 3. the right PIN while locked
        self.step("The patient remembers the PIN and types it right; a locked PIN is not even checked.")
        a = self.pinlife("--terminal", "clinic-reader-07", "verify", CARD, "user_certificate", "1234")
        check = self.expect_check(a, "CHECK_RESULT_LOCKED", "still locked")
        if check.get("locked_now"):
            raise StoryBroke("locked before this try", "locked_now: true")
        self.answer(f"still locked; go to {self.where_to_go(check.get('recovery', {}))}")

        # 4. counter reset: refused without the card, done with it
        self.step("At the Naka Ward Office counter the clerk starts a reset before the card is on the desk.")
        a = self.pinlife("--office", OFFICE, "reset", CARD, "user_certificate", "5678")
        if a.code != 1 or "FAILED_PRECONDITION" not in a.err or "DOCUMENT_MISSING documents/my_number_card" not in a.err:
            raise StoryBroke("FAILED_PRECONDITION, DOCUMENT_MISSING my_number_card", a.said())
        reasons = [line.strip().split(": ", 1)[-1] for line in a.err.splitlines() if "DOCUMENT_" in line]
        self.answer("refused, nothing changed: " + "; ".join(reasons))

        self.step("The holder shows the My Number Card; the clerk resets the PIN to a new one.")
        a = self.pinlife("--office", OFFICE, "reset", CARD, "user_certificate", "5678", "--doc", "my_number_card")
        pin = a.json("the PIN reset").get("pin", {})
        if pin.get("status") != "PIN_STATUS_ACTIVE" or pin.get("remaining_tries") != 3:
            raise StoryBroke("the PIN active with 3 tries", a.said())
        self.answer(f"reset done: the {pin_name(pin['pin_type'])} is active again, new PIN, {tries(pin['remaining_tries'])}")

        self.step("Back at the clinic, the new PIN works.")
        a = self.pinlife("--terminal", "clinic-reader-07", "verify", CARD, "user_certificate", "5678")
        check = self.expect_check(a, "CHECK_RESULT_OK", "the PIN accepted")
        self.answer(f"OK; {tries(check.get('remaining_tries', 0))} of {check.get('retry_limit')}")

        # 5. the signature PIN at a convenience store
        self.step("At home, filing a tax return, the holder mistypes the signature PIN five times.")
        check = self.wrong_tries("home-pc", "signature", "WRONG1", 5)
        recovery = check.get("recovery", {})
        procedures = recovery.get("procedures", [])
        if "RECOVERY_PROCEDURE_CONVENIENCE_STORE_RESET" not in procedures:
            raise StoryBroke("a convenience-store reset offered", ", ".join(procedures) or "none")
        ways = [short(p, "RECOVERY_PROCEDURE_") for p in procedures]
        self.answer(f"locked; the way out: {', or '.join(ways)}; the counters: {self.where_to_go(recovery)}")
        self.answer(f"the screen shows: \u201c{recovery.get('description', '')}\u201d")

        self.step("In the reset app the holder reserves a convenience-store reset, proving the user-certificate PIN.")
        a = self.pinlife("--terminal", "reset-app", "reserve", CARD, "signature", "5678")
        r = a.json("the reset reserved")
        if not r.get("reserved") or r.get("proving_pin_type") != "PIN_TYPE_USER_CERTIFICATE":
            raise StoryBroke("reserved, proved by the user-certificate PIN", a.said())
        self.answer(
            f"reserved, proved with the {pin_name(r['proving_pin_type'])}; go to a kiosk by {self.when(instant(r['expires_at']))}"
        )

        self.step("At a convenience-store kiosk the holder proves the same PIN again and sets a new signature PIN.")
        a = self.pinlife("--terminal", "kiosk-0042", "store-reset", CARD, "signature", "5678", "NEW789")
        r = a.json("the store reset done")
        if not r.get("reset") or r.get("check", {}).get("result") != "CHECK_RESULT_OK":
            raise StoryBroke("reset: true", a.said())
        self.answer("store reset done: the signature PIN is new and unlocked")

        self.step("Back home, the new signature PIN works.")
        a = self.pinlife("--terminal", "home-pc", "verify", CARD, "signature", "NEW789")
        check = self.expect_check(a, "CHECK_RESULT_OK", "the PIN accepted")
        self.answer(f"OK; {tries(check.get('remaining_tries', 0))} of {check.get('retry_limit')}")

        # 6. a proxy's two visits
        self.step(
            "The holder has forgotten the resident-registry PIN and cannot go in person: a proxy goes, twice. "
            "First visit, with the holder's card and the proxy's own ID."
        )
        a = self.pinlife(
            "--office", OFFICE, "proxy-request", CARD, "resident_registry", "--doc", "my_number_card", "--doc", "other_id"
        )
        r = a.json("an inquiry issued")
        inquiry, code = r.get("inquiry_id", ""), r.get("code", "")
        if not inquiry or not re.fullmatch(r"\d{8}", code):
            raise StoryBroke("an inquiry id and an 8-digit code", a.said())
        self.answer(
            f"inquiry {inquiry} issued; its one-time code ({code}) goes to the holder by post with the "
            f"inquiry form; valid until {self.when(instant(r['expires_at']))}"
        )

        self.step(
            "Second visit (in life, days later): the proxy brings the card, the filled inquiry form with the code, "
            "the power of attorney and a photo ID."
        )
        a = self.pinlife(
            "--office",
            OFFICE,
            "proxy-complete",
            CARD,
            "resident_registry",
            inquiry,
            code,
            "2468",
            "--doc",
            "my_number_card",
            "--doc",
            "inquiry_form",
            "--doc",
            "power_of_attorney",
            "--doc",
            "public_photo_id",
        )
        r = a.json("the proxy reset completed")
        if r.get("result") != "PROXY_RESET_RESULT_COMPLETED" or r.get("pin", {}).get("status") != "PIN_STATUS_ACTIVE":
            raise StoryBroke("PROXY_RESET_RESULT_COMPLETED, the PIN active", a.said())
        self.answer(f"proxy reset done: the {pin_name(r['pin']['pin_type'])} is new, {tries(r['pin']['remaining_tries'])}")

        # 7. a lost card
        self.step("The card is lost: the holder calls the call centre, which suspends it (at any hour).")
        a = self.pinlife("--terminal", "call-centre", "suspend", CARD, "--reason", "lost")
        if a.json("the card suspended").get("card_status") != "CARD_STATUS_SUSPENDED":
            raise StoryBroke("CARD_STATUS_SUSPENDED", a.said())
        self.answer("card suspended")

        self.step("The card turns up; at the clinic it is refused while suspended.")
        a = self.pinlife("--terminal", "clinic-reader-07", "verify", CARD, "user_certificate", "5678")
        check = self.expect_check(a, "CHECK_RESULT_CARD_SUSPENDED", "refused: card suspended")
        recovery = check.get("recovery", {})
        if recovery.get("route") != "RECOVERY_ROUTE_RESUME_AT_COUNTER":
            raise StoryBroke("RECOVERY_ROUTE_RESUME_AT_COUNTER", recovery.get("route", "none"))
        self.answer(f"card suspended, PIN not checked; resume it at {self.where_to_go(recovery)}")

        self.step("At the Naka Ward Office counter, with the card, the suspension is lifted.")
        a = self.pinlife("--office", OFFICE, "resume", CARD, "--doc", "my_number_card")
        if a.json("the card resumed").get("card_status") != "CARD_STATUS_ACTIVE":
            raise StoryBroke("CARD_STATUS_ACTIVE", a.said())
        self.answer("card active again")

        a = self.pinlife("--terminal", "clinic-reader-07", "verify", CARD, "user_certificate", "5678")
        self.expect_check(a, "CHECK_RESULT_OK", "the PIN accepted")
        self.answer("OK at the clinic")

        # 8. the auditor
        heading("The auditor reads what happened")
        self.auditor_history()
        self.auditor_checkpoint()
        self.auditor_verify()

    def auditor_history(self) -> None:
        self.step(f"The auditor reads card {CARD}'s history, every event in order.")
        events = self.pinlife("audit", "history", CARD, "--format", "jsonl").lines("the card's history")
        if not events:
            raise StoryBroke("the card's events", "none")
        day = instant(events[0]["occurred_at"]).astimezone(TOKYO)
        print(f"     card {CARD}, {day:%A} {day.day} {day:%B %Y}, times in Tokyo")
        print(f"     {'pos':>3}  {'time':<8}  {'event':<24} {'PIN':<18} {'by':<23} outcome")
        for e in events:
            at = instant(e["occurred_at"]).astimezone(TOKYO)
            by = e.get("terminal_id", "") + (f" @ {e['office_id']}" if e.get("office_id") else "")
            pin = (
                short(e.get("pin_type", ""), "PIN_TYPE_")
                if e.get("pin_type", "PIN_TYPE_UNSPECIFIED") != "PIN_TYPE_UNSPECIFIED"
                else ""
            )
            outcome = short(e.get("outcome", ""), "EVENT_OUTCOME_")
            print(f"     {e['version']:>3}  {at:%H:%M:%S}  {e['event_type']:<24} {pin:<18} {by:<23} {outcome}", flush=True)

        def seen(event_type: str, pin_type: str = "", terminal: str = "", office: str = "") -> None:
            for e in events:
                if (
                    e["event_type"] == event_type
                    and (not pin_type or e.get("pin_type") == pin_type)
                    and (not terminal or e.get("terminal_id") == terminal)
                    and (not office or e.get("office_id") == office)
                ):
                    return
            wanted = " ".join(x for x in (event_type, pin_type, terminal and f"by {terminal}", office and f"at {office}") if x)
            raise StoryBroke(f"{wanted} in the history", ", ".join(e["event_type"] for e in events))

        seen("PinLocked", "PIN_TYPE_USER_CERTIFICATE", terminal="clinic-reader-07")
        seen("PinReset", "PIN_TYPE_USER_CERTIFICATE", office=OFFICE)
        seen("PinLocked", "PIN_TYPE_SIGNATURE", terminal="home-pc")
        seen("StoreResetReserved", "PIN_TYPE_SIGNATURE", terminal="reset-app")
        seen("PinReset", "PIN_TYPE_SIGNATURE", terminal="kiosk-0042")
        seen("ProxyInquiryIssued", "PIN_TYPE_RESIDENT_REGISTRY", office=OFFICE)
        seen("PinReset", "PIN_TYPE_RESIDENT_REGISTRY", office=OFFICE)
        seen("CardSuspended", terminal="call-centre")
        seen("CardResumed", office=OFFICE)
        versions = [int(e["version"]) for e in events]
        if versions != list(range(1, len(events) + 1)):
            raise StoryBroke("versions 1, 2, 3, ... without a gap", ", ".join(map(str, versions)))
        locks = sum(e["event_type"] == "PinLocked" for e in events)
        resets = sum(e["event_type"] == "PinReset" for e in events)
        self.answer(f"history shown: {len(events)} events, {locks} locks, {resets} resets, the suspension and its resumption")

    def auditor_checkpoint(self) -> None:
        self.step("The auditor fetches the log's latest signed checkpoint and keeps it on the auditor's own machine.")
        deadline, shown = time.monotonic() + 15, False
        while True:
            a = self.pinlife("audit", "checkpoint", "--format", "jsonl", show=not shown)
            shown = True
            if a.code == 2 and "NOT_FOUND" in a.err and time.monotonic() < deadline:
                self.answer("none signed yet (the server signs one every 10 s while the log grows); asking again shortly")
                time.sleep(3)
                continue
            break
        r = a.json("a signed checkpoint")
        if not r.get("tree_size") or not r.get("verifier_key"):
            raise StoryBroke("a checkpoint with its tree size and key", a.said())
        kept = Path(self.env["PINLIFE_AUDIT_CHECKPOINTS"])
        if not kept.exists():
            raise StoryBroke(f"the checkpoint kept in {kept}", "no such file")
        self.answer(
            f"checkpoint of {r['origin']}: the first {r['tree_size']} events of the log (it is signed every 10 s), "
            f"its signature checked with the key {'+'.join(r['verifier_key'].split('+')[:2])}; kept in {kept}"
        )

    def auditor_verify(self) -> None:
        self.step(
            "The auditor checks the whole store: keyed links, each card's MAC, the projection against a rebuild, "
            "lawful history, and the checkpoints, the kept one included."
        )
        a = self.pinlife("audit", "verify", "--format", "jsonl")
        if a.code not in (0, 1):
            raise StoryBroke("a report (exit 0 intact)", a.said())
        reports = a.lines("an integrity report")
        report = reports[-1] if reports else {}
        if a.code != 0 or not report.get("intact"):
            problems = "; ".join(f"{p.get('kind')}: {p.get('reason')}" for p in report.get("problems", [])) or a.said()
            raise StoryBroke("intact", problems)
        n = lambda count, noun: f"{count} {noun}{'' if int(count) == 1 else 's'}"  # noqa: E731
        self.answer(
            f"intact: {n(report['events_checked'], 'event')} and {n(report['cards_checked'], 'card')} checked, "
            f"up to position {report['head_position']}; {n(report['checkpoints_checked'], 'checkpoint')} matched"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clock", default=DEFAULT_CLOCK, help=f"the service clock (PINLIFE_CLOCK; default {DEFAULT_CLOCK}, a Tuesday morning)"
    )
    args = parser.parse_args(argv)
    try:
        demo = Demo(args.clock)
    except ClockSettingError as exc:
        print(f"demo: --clock {exc}", file=sys.stderr)
        return 2
    interrupted = False
    try:
        demo.set_up()
        demo.play()
    except StoryBroke as exc:
        say()
        say(f"The story broke at step {demo.steps}:" if demo.steps else "The story broke while setting up:")
        say(f"expected: {exc.expected}", indent=3)
        say(f"came:     {exc.came}", indent=3)
        code = 1
    except KeyboardInterrupt:
        interrupted, code = True, 130
    except Exception as exc:  # noqa: BLE001 - a demo says what went wrong in a line, never a traceback
        say()
        say(f"The demo could not go on ({type(exc).__name__}: {exc}).")
        code = 1
    else:
        code = 0
    finally:
        demo.tear_down()
    if not interrupted:
        say()
        if code == 0:
            say("The story played as docs/procedures.md tells it.")
        say(f"The server is stopped and {demo.tmp} removed.")
    return code


if __name__ == "__main__":
    sys.exit(main())
