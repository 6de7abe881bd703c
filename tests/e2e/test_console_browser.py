"""`pinlife console` in a real browser: headless Chromium (Debian's, driven
by Playwright with executable_path: Playwright's own browser download is
not used), against a real server over mutual TLS, the console reading it
with an auditor's certificate as `pinlife audit` would. The data is the
seed story's (tools/demo.py: card-0002 enrolled at the Naka Ward Office,
locked at the clinic, reset at the counter; the signature PIN locked at
home and reset at a kiosk; the card suspended and resumed), with a card
left locked and a reader failing on many cards, over two days.

One server, one console and one browser per module (per xdist worker that
runs some of its tests); each test a page. Screenshots of each page go to
build/screenshots/ (docs/screenshots/ keeps a set, linked from docs/audit.md).

Without Chromium the module is skipped, saying why, unless
PINLIFE_REQUIRE_BROWSER=1 (.ci/run, which installs it), where it fails."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from pinlife.config.access import load_access_config
from pinlife.console.app import create_app
from pinlife.console.client import GrpcReads
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import counter_service_pb2 as cpb
from tests import procedures as p
from tests.clock import FakeClock
from tests.e2e.harness import NO_RATE_LIMITS, ROOT, Client, ThreadedServer, cli
from tests.keys import ring

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("PINLIFE_REQUIRE_BROWSER") == "1"
SHOTS = ROOT / "build" / "screenshots"
START = datetime.fromisoformat("2026-12-01T10:00:00+09:00").astimezone(UTC)  # a Tuesday: the ward office is open
OFFICE = "naka-ward-office"
TERMINALS = {  # the story's terminals: role, office
    "naka-counter-01": ("ward_office", OFFICE),
    "clinic-reader-07": ("medical_reader", None),
    "clinic-reader-13": ("medical_reader", None),
    "home-pc": ("self_service", None),
    "reset-app": ("smartphone_app", None),
    "kiosk-0042": ("convenience_store", None),
    "call-centre": ("call_center", None),
    "auditor-01": ("auditor", None),
}
USER, SIGN, RESIDENT = p.USER, p.SIGN, p.RESIDENT

if CHROMIUM is None:
    reason = "no Chromium (apt-get install chromium): the console's browser tests need it"
    pytestmark = pytest.mark.skip(reason) if not REQUIRED else []
    if REQUIRED:
        raise RuntimeError(reason + " (PINLIFE_REQUIRE_BROWSER=1)")


class Story:
    """The terminals of the seed story over mutual TLS, each its own client."""

    def __init__(self, target: str, ca: trustme.CA, folder: Path, clock: FakeClock) -> None:
        self.target, self.ca, self.folder, self.clock = target, ca, folder, clock
        self.clients: dict[str, Client] = {}

    def files(self, terminal: str) -> tuple[str, str]:
        """The terminal's certificate and key as files (the console reads them as the CLI does)."""
        leaf = self.ca.issue_cert(f"{terminal}.terminals.example", common_name=terminal)
        cert, key = self.folder / f"{terminal}.pem", self.folder / f"{terminal}-key.pem"
        cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        return str(cert), str(key)

    def __getitem__(self, terminal: str) -> Client:
        if terminal not in self.clients:
            import grpc

            cert, key = self.files(terminal)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.ca.cert_pem.bytes(),
                private_key=Path(key).read_bytes(),
                certificate_chain=Path(cert).read_bytes(),
            )
            self.clients[terminal] = Client(self.target, credentials=credentials)
        return self.clients[terminal]

    def at(self, when: str) -> None:
        self.clock.now = datetime.fromisoformat(when).astimezone(UTC)  # the service's clock is in UTC

    def later(self, minutes: float = 1) -> None:
        self.clock.advance(minutes=minutes)

    def play(self) -> None:
        counter, clinic = self["naka-counter-01"], self["clinic-reader-07"]
        # The seed story (tools/demo.py), card-0002.
        counter.counter.EnrollCard(
            cpb.EnrollCardRequest(
                request_id=p.rid(), card_id="card-0002", ward="naka",
                pins=[cpb.InitialPin(pin_type=t, pin=v) for t, v in ((USER, "1234"), (SIGN, "ABC123"), (RESIDENT, "1234"))],
            ),
            timeout=10, metadata=counter.metadata,
        )  # fmt: skip
        for _ in range(3):
            self.later()
            clinic.verify("card-0002", USER, "9999")
        self.later()
        clinic.verify("card-0002", USER, "1234")  # locked: not even checked
        self.later(20)
        try:
            p.reset(counter, "card-0002", USER, "5678", documents=())  # the card not yet on the desk
        except Exception:  # noqa: BLE001 - refused (FAILED_PRECONDITION), and recorded
            pass
        self.later()
        p.reset(counter, "card-0002", USER, "5678")
        self.later(30)
        clinic.verify("card-0002", USER, "5678")
        self.at("2026-12-01T20:00:00+09:00")
        for _ in range(5):
            self.later()
            self["home-pc"].verify("card-0002", SIGN, "WRONG1")
        self.later(10)
        reservation = p.reserve(self["reset-app"], "card-0002", "5678")
        assert reservation.reservation_id
        self.later(30)
        p.kiosk_reset(self["kiosk-0042"], "card-0002", "5678", "NEW789")
        self.later(10)
        self["home-pc"].verify("card-0002", SIGN, "NEW789")
        # The next day: lost, suspended, refused at the clinic, resumed at the counter.
        self.at("2026-12-02T09:10:00+09:00")
        self["call-centre"].counter.SuspendCard(
            cpb.SuspendCardRequest(request_id=p.rid(), card_id="card-0002", reason=cpb.SUSPENSION_REASON_LOST),
            timeout=10, metadata=self["call-centre"].metadata,
        )  # fmt: skip
        self.later(30)
        clinic.verify("card-0002", USER, "5678")
        self.later(60)
        counter.counter.ResumeCard(
            cpb.ResumeCardRequest(request_id=p.rid(), card_id="card-0002", applicant=pb.APPLICANT_HOLDER, documents=[p.CARD]),
            timeout=10,
            metadata=counter.metadata,
        )
        # card-0001, locked and left locked; a reader failing on many cards.
        self.at("2026-12-02T11:00:00+09:00")
        counter.enroll("card-0001", {USER: "4821", SIGN: "KX73PQ"})
        for _ in range(3):
            self.later()
            clinic.verify("card-0001", USER, "0000")
        self.at("2026-12-02T14:00:00+09:00")
        for n in range(3, 8):
            counter.enroll(f"card-000{n}", {USER: "4821"})
            self.later(2)
            self["clinic-reader-13"].verify(f"card-000{n}", USER, "1111")
        counter.enroll("card-tamper", {USER: "4821"})
        self.later()
        clinic.verify("card-tamper", USER, "0000")

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class ConsoleServer:
    """create_app over GrpcReads (the `pinlife console` command's) in uvicorn, in a thread."""

    def __init__(self, args: argparse.Namespace, kept: str) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(GrpcReads(args), kept=kept, description="with the certificate of auditor-01", page_size=8)
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def world(module_databases, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    ca = trustme.CA(organization_name="pinlife terminal CA")
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(folder / "server-key.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    terminals = "\n".join(
        f'[terminals.{t}]\nrole = "{role}"\n' + (f'office = "{office}"\n' if office else "")
        for t, (role, office) in TERMINALS.items()
    )
    access = folder / "access.toml"
    access.write_text(f'[tls]\ncert = "server.pem"\nkey = "server-key.pem"\nclient_ca = "ca.pem"\n\n{terminals}')
    keys = ring("test-1", {"test-1": os.urandom(32)})
    clock = FakeClock(START)
    server = ThreadedServer(
        module_databases.create("sqlite"),
        keys,
        clock=clock,
        access=load_access_config(access),
        access_file=access,
        rates=NO_RATE_LIMITS,
    )
    story = Story(server.target, ca, folder, clock)
    console = None
    try:
        story.play()
        cert, key = story.files("auditor-01")
        tls = [
            "--server",
            server.target,
            "--ca",
            str(folder / "ca.pem"),
            "--cert",
            cert,
            "--key",
            key,
            "--server-name",
            "localhost",
        ]
        kept = str(folder / "kept.jsonl")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")} | {"PINLIFE_AUDIT_CHECKPOINTS": kept}
        from pinlife.store import checkpoints

        checkpoints.sign_checkpoint(server.store, keys, clock())
        kept_one = cli("audit", "checkpoint", "--format", "jsonl", *tls, env=env)  # as the auditor keeps one
        assert kept_one.returncode == 0, kept_one.stderr
        args = argparse.Namespace(server=server.target, ca=str(folder / "ca.pem"), cert=cert, key=key, server_name="localhost")
        console = ConsoleServer(args, kept)
        yield argparse.Namespace(server=server, story=story, console=console, url=console.url)
    finally:
        if console is not None:
            console.close()
        story.close()
        server.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox cannot start as root (CI runs as root).
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, world):
    """A page of the console; no script error and no refused resource (CSP) on it by the end of the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True, base_url=world.url)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    tab.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    yield tab
    context.close()
    assert problems == []


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_card_history_shows_the_lock_the_pin_states_and_pages_by_cursor(page, world):
    page.goto("/history")
    page.fill("input[name=card]", "card-0001")
    page.click("text=Show")
    states = page.locator("#pin-states")
    assert states.locator("tr.pin-locked td").first.inner_text() == "user certificate"
    assert "PinLocked" in [t.get_attribute("title") for t in page.locator("#events tbody td[title]").all()]
    locked = page.locator("#events tr.outcome-locked").first
    assert "PIN locked" in locked.inner_text() and "clinic-reader-07" in locked.inner_text()
    assert "2026-12-02 11:03:00" in locked.inner_text()  # JST
    shot(page, "history")

    # card-0002's story, a page of 8 at a time: "More" brings the next by the API's cursor.
    page.goto("/history?card=card-0002")
    assert page.locator("#events tbody tr[data-position]").count() == 8
    page.click("#events tr.more a")
    page.locator("#events tbody tr[data-position]").nth(8).wait_for()  # (not wait_for_function: the page's CSP forbids eval)
    positions = [
        int(p) for p in page.locator("#events tbody tr[data-position]").evaluate_all("rs => rs.map(r => r.dataset.position)")
    ]
    assert positions == sorted(set(positions)) and len(positions) == 16
    page.goto("/history?card=card-0002&lang=ja")
    assert "暗証番号ロック" in page.locator("#events").inner_text()  # PinLocked, on the first page
    assert "利用者証明用電子証明書" in page.locator("#pin-states").inner_text()
    shot(page, "history-ja")


def test_a_query_filtered_and_exported(page, world, tmp_path):
    page.goto("/query")
    page.select_option("select[name=event_type]", ["PinLocked", "LockedPinAttempted"])
    page.select_option("select[name=channel]", ["medical_reader"])
    page.click("text=Search")
    rows = page.locator("#events tbody tr[data-position]")
    rows.first.wait_for()
    types = rows.evaluate_all("rs => rs.map(r => r.children[2].title)")
    assert set(types) == {"PinLocked", "LockedPinAttempted"}, types
    assert len(types) == 3  # card-0002 locked and attempted, card-0001 locked: at the clinic (medical_reader)
    shot(page, "query")
    with page.expect_download() as download:
        page.click("#export-csv")
    saved = tmp_path / "events.csv"
    download.value.save_as(saved)
    exported = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [r["event_type"] for r in exported] == ["PinLocked", "LockedPinAttempted", "PinLocked"]
    assert {r["channel"] for r in exported} == {"medical_reader"} and exported[0]["occurred_at"].endswith("+09:00")
    with page.expect_download() as download:
        page.click("#export-jsonl")
    download.value.save_as(tmp_path / "events.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["position"] for e in lines] == [r["position"] for r in exported] and lines[0]["hash"]


def test_a_live_event_appears_and_a_paused_tail_resumes_after_the_last(page, world):
    page.goto("/live")
    page.wait_for_selector("#live-status:has-text('watching')")
    page.locator("#live-events tbody tr").first.wait_for()
    world.story.later()
    world.story["clinic-reader-07"].verify("card-0003", USER, "4821")
    fresh = page.locator("#live-events tbody tr", has_text="card-0003").filter(has_text="PIN verified")
    fresh.wait_for()
    shot(page, "live")

    page.click("#live-pause")
    page.wait_for_selector("#live-status:has-text('paused')")
    shown = page.locator("#live-events tbody tr").count()
    world.story["clinic-reader-07"].verify("card-0004", USER, "4821")
    page.wait_for_timeout(300)
    assert page.locator("#live-events tbody tr").count() == shown  # paused: nothing comes
    page.click("#live-start")  # Resume
    page.locator("#live-events tbody tr", has_text="card-0004").first.wait_for()
    positions = page.locator("#live-events tbody tr").evaluate_all("rs => rs.map(r => Number(r.dataset.position))")
    assert positions == sorted(set(positions), reverse=True)  # newest first, none twice


def test_an_integrity_check_passes_then_fails_after_the_store_is_tampered_with(page, world):
    page.goto("/integrity")
    assert int(page.locator("#tree-size").inner_text()) > 0
    assert page.locator("#kept tbody tr").count() == 1  # the one `pinlife audit checkpoint` kept
    page.click("#verify")
    page.wait_for_selector("#integrity-run[data-state=intact]")
    assert "✓ intact" in page.locator("#integrity-run").inner_text()
    shot(page, "integrity")

    # Someone with power over the database rewrites card-tamper's wrong PIN into a right one.
    with world.server.store.writer.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_update")
        conn.exec_driver_sql(
            "UPDATE events SET event_type = 'PinVerified', payload = '{}' WHERE stream_id = 'card-tamper' AND version = 2"
        )
    page.fill("#verify-form input[name=card]", "card-tamper")  # one card: checked in the server, without a process of its own
    page.click("#verify")
    page.wait_for_selector("#integrity-run[data-state=problem]")
    verdict = page.locator("#integrity-run .verdict").inner_text()
    assert "problem found: broken_link at card-tamper v2" in verdict
    shot(page, "integrity-tampered")


def test_statistics_draw_their_charts(page, world):
    page.goto("/stats?from=2026-12-01T09:00&to=2026-12-03T00:00&granularity=hour")
    page.wait_for_selector("canvas[data-chart=locks][data-drawn=true]")
    drawn = page.locator("canvas[data-drawn=true]").evaluate_all(
        "cs => cs.map(c => [c.dataset.chart, Number(c.dataset.points), c.width > 0 && c.height > 0])"
    )
    assert {name for name, _, _ in drawn} == {"time", "time_channel", "channel", "enumeration", "locks"}
    assert all(points > 0 and sized for _, points, sized in drawn), drawn
    assert page.locator("#enumeration tbody tr").first.inner_text().split()[:2] == ["clinic-reader-13", "5"]
    shot(page, "stats")
    # Pixels, not only a canvas: the locks chart has some painted.
    painted = page.locator("canvas[data-chart=locks]").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0)"
    )
    assert painted
