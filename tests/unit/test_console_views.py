"""The console's views (service/console/views.py) and its application
(app.py) against a fake of what it reads: pages, cursors, exports, the
live stream, an integrity run, statistics, labels in both languages, and
what keeps it safe (escaping, the same-origin POST, hosts, headers). No
server, no browser: the browser tests are tests/e2e/test_console_browser.py."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.testclient import TestClient

from pinlife.console import views
from pinlife.console.app import create_app
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from pinlife.v1 import pin_service_pb2 as ppb

AT = datetime(2026, 12, 1, 1, 30, tzinfo=UTC)  # 10:30 in Tokyo
HOSTILE = '<img src=x onerror="alert(1)">'


class Refused(grpc.RpcError):
    """An RPC error as a call raises it (code, details)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return ()


def event(position: int, event_type: str = "PinVerificationFailed", card: str = "card-1", **fields) -> apb.AuditEvent:
    at = Timestamp()
    at.FromDatetime(AT)
    payload = Struct()
    payload.update(fields.pop("payload", {"purpose": "verify", "consecutive_failures": position}))
    outcome = {"PinLocked": apb.EVENT_OUTCOME_LOCKED, "CardEnrolled": apb.EVENT_OUTCOME_SUCCESS}.get(
        event_type, apb.EVENT_OUTCOME_FAILURE
    )
    return apb.AuditEvent(
        position=position,
        stream_id=card,
        stream_kind=apb.STREAM_KIND_CARD,
        version=position,
        event_type=event_type,
        occurred_at=at,
        pin_type=pb.PIN_TYPE_USER_CERTIFICATE,
        channel="medical_reader",
        terminal_id=fields.pop("terminal", "clinic-reader-07"),
        outcome=outcome,
        payload=apb.EventPayload(json=payload),
        **fields,
    )


class Stream:
    def __init__(self, answers, then: grpc.RpcError | None = None) -> None:
        self.answers, self.then, self.cancelled = list(answers), then, threading.Event()

    def __iter__(self):
        yield from self.answers
        if self.then is not None:
            raise self.then

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class FakeReads:
    """What the console reads: a log of events, pages of `page` events with
    the position as the cursor, and the requests as they came."""

    server = "127.0.0.1:50051"

    def __init__(self, events: list[apb.AuditEvent] | None = None) -> None:
        self.events = (
            events if events is not None else [event(n, "PinLocked" if n == 3 else "PinVerificationFailed") for n in (1, 2, 3)]
        )
        self.requests: list = []
        self.refuse: grpc.RpcError | None = None
        self.watch_then: grpc.RpcError | None = None
        self.watches: list[Stream] = []
        self.report = apb.IntegrityReport(intact=True, events_checked=3, cards_checked=1, head_position=3)

    def _page(self, events, request):
        self.requests.append(request)
        if self.refuse is not None:
            raise self.refuse
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page = events[start : start + size]
        more = str(start + size) if start + size < len(events) else ""
        return page, more

    def history(self, request):
        page, more = self._page([e for e in self.events if e.stream_id == request.card_id], request)
        return apb.GetCardHistoryResponse(events=page, next_page_token=more, stream_version=len(self.events))

    def query(self, request):
        events = self.events[::-1] if request.order == apb.ORDER_NEWEST_FIRST else self.events
        page, more = self._page(events, request)
        return apb.QueryEventsResponse(events=page, next_page_token=more)

    def watch(self, request):
        self.requests.append(request)
        after = [e for e in self.events if e.position > request.after_position]
        stream = Stream([apb.WatchEventsResponse(events=after)], then=self.watch_then)
        self.watches.append(stream)
        return stream

    def verify(self, request):
        self.requests.append(request)
        progress = apb.IntegrityProgress(phase="cards", done=1, total=1)
        return Stream([apb.VerifyIntegrityResponse(progress=progress), apb.VerifyIntegrityResponse(report=self.report)])

    def checkpoint(self):
        return apb.GetCheckpointResponse(note="pinlife.test/log\n3\nROOT=\n\n— sig\n", origin="pinlife.test/log", tree_size=3)

    def statistics(self, request):
        self.requests.append(request)
        day = request.granularity == apb.GRANULARITY_DAY
        counts = apb.Counts(checks=3, failures=2, locks=1, events=3)
        buckets = [
            apb.CountsBy(
                key=f"2026-12-0{d}T00:00:00+09:00" if day else f"2026-12-01T{h:02d}:00:00+09:00",
                counts=counts,
                by_channel=[apb.CountsBy(key="medical_reader", counts=counts)] if d == 1 else [],
            )
            for d, h in ((1, 10), (2, 11))
        ]
        return apb.GetStatisticsResponse(
            total=counts,
            by_channel=[apb.CountsBy(key="medical_reader", counts=counts)],
            by_time=buckets,
            most_distinct_card_failures=[apb.TerminalFailures(terminal_id="clinic-reader-13", distinct_cards=4, failures=4)],
        )

    def pin_status(self, card_id):
        locked = Timestamp()
        locked.FromDatetime(AT)
        return ppb.GetPinStatusResponse(
            card_id=card_id,
            card_status=pb.CARD_STATUS_ACTIVE,
            stream_version=3,
            pins=[
                pb.PinState(
                    pin_type=pb.PIN_TYPE_USER_CERTIFICATE,
                    status=pb.PIN_STATUS_LOCKED,
                    consecutive_failures=3,
                    retry_limit=3,
                    locked_at=locked,
                ),
                pb.PinState(pin_type=pb.PIN_TYPE_SIGNATURE, status=pb.PIN_STATUS_ACTIVE, remaining_tries=5, retry_limit=5),
            ],
        )


@pytest.fixture
def reads():
    return FakeReads()


@pytest.fixture
def web(reads, tmp_path):
    return TestClient(create_app(reads, kept=str(tmp_path / "kept.jsonl"), page_size=2), base_url="http://127.0.0.1:8040")


def test_card_history_shows_the_pin_states_and_a_page_then_the_next_by_its_cursor(web, reads):
    page = web.get("/history", params={"card": "card-1"})
    assert page.status_code == 200
    text = page.text
    assert "locked" in text and "2026-12-01 10:30:00" in text  # JST
    assert text.count('data-position="') == 2 and 'data-position="3"' not in text
    assert "PIN locked" not in text and "wrong PIN" in text  # labels, English
    assert 'hx-get="/history?card=card-1&amp;order=oldest&amp;token=2"' in text
    more = web.get("/history", params={"card": "card-1", "order": "oldest", "token": "2"}, headers={"hx-request": "true"})
    assert more.text.count('data-position="') == 1 and 'data-position="3"' in more.text and "<html" not in more.text
    assert "PIN locked" in more.text and 'class="more"' not in more.text  # the last page: no next
    assert [r.page_token for r in reads.requests if isinstance(r, apb.GetCardHistoryRequest)] == ["", "2"]


def test_labels_in_japanese_and_the_choice_kept_in_a_cookie(web):
    page = web.get("/history", params={"card": "card-1", "lang": "ja"})
    assert "暗証番号誤り" in page.text and "利用者証明用電子証明書" in page.text and '<html lang="ja">' in page.text
    assert page.cookies.get("lang") == "ja"
    again = web.get("/history", params={"card": "card-1"})
    assert "暗証番号誤り" in again.text


def test_errors_of_the_server_are_said_on_the_page(web, reads):
    reads.refuse = Refused(grpc.StatusCode.NOT_FOUND, "card card-9 is not enrolled")
    page = web.get("/history", params={"card": "card-9"})
    assert page.status_code == 200 and "NOT_FOUND: card card-9 is not enrolled" in page.text


def test_data_is_escaped_in_every_page(web, reads):
    reads.events = [event(1, terminal=HOSTILE, payload={"purpose": HOSTILE})]
    for path, params in (("/history", {"card": "card-1"}), ("/query", {"streams": "all"})):
        text = web.get(path, params=params).text
        assert HOSTILE not in text and "&lt;img src=x onerror=" in text
    reads.refuse = Refused(grpc.StatusCode.INVALID_ARGUMENT, HOSTILE)
    assert HOSTILE not in web.get("/history", params={"card": "x"}).text


def test_a_query_filter_becomes_the_request_and_the_export_links_carry_it(web, reads):
    params = [
        ("event_type", "PinLocked"),
        ("channel", "medical_reader"),
        ("terminal", "clinic-reader-07"),
        ("pin_type", "user_certificate"),
    ]
    params += [("outcome", "locked"), ("from", "2026-12-01T10:00"), ("to", "2026-12-02T00:00"), ("order", "newest")]
    page = web.get("/query", params=params)
    assert page.status_code == 200
    (request,) = [r for r in reads.requests if isinstance(r, apb.QueryEventsRequest)]
    f = request.filter
    assert list(f.event_types) == ["PinLocked"] and list(f.channels) == ["medical_reader"] and f.terminal_id == "clinic-reader-07"
    assert f.pin_type == pb.PIN_TYPE_USER_CERTIFICATE and list(f.outcomes) == [apb.EVENT_OUTCOME_LOCKED]
    assert getattr(f, "from").ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 10:00 JST
    assert request.order == apb.ORDER_NEWEST_FIRST and request.page_size == 2
    assert 'href="/query/export.csv?from=2026-12-01T10%3A00&amp;to=2026-12-02T00%3A00&amp;event_type=PinLocked' in page.text
    bad = web.get("/query", params={"from": "yesterday-ish"})
    assert "from: " in bad.text and "is not a time" in bad.text


def test_nothing_is_read_before_the_form_is_sent(web, reads):
    assert web.get("/query").status_code == 200 and web.get("/query", params={"lang": "ja"}).status_code == 200
    assert reads.requests == []


def test_exports_are_every_page_in_the_cli_formats(web, reads):
    reads.events = [event(n) for n in range(1, 6)]
    done = web.get("/query/export.csv", params={"event_type": "PinVerificationFailed"})
    assert done.status_code == 200 and done.headers["content-disposition"] == 'attachment; filename="pinlife-events.csv"'
    rows = list(csv.DictReader(io.StringIO(done.text)))
    assert [r["position"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0]["occurred_at"] == "2026-12-01T10:30:00+09:00" and rows[0]["outcome"] == "failure"
    lines = [json.loads(line) for line in web.get("/query/export.jsonl").text.splitlines()]
    assert [int(e["position"]) for e in lines] == [1, 2, 3, 4, 5] and lines[0]["payload"]["purpose"] == "verify"
    reads.refuse = Refused(grpc.StatusCode.PERMISSION_DENIED, "role medical_reader may not call QueryEvents")
    refused = web.get("/query/export.csv")
    assert refused.status_code == 502 and refused.text.startswith("PERMISSION_DENIED")
    assert web.get("/query/export.xml").status_code == 404


def test_the_live_stream_resumes_after_the_last_event_id_and_frees_the_watch(web, reads):
    reads.watch_then = Refused(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
    with web.stream("GET", "/live/stream", params={"after": "1"}) as response:
        body = "".join(response.iter_text())
    assert response.headers["content-type"].startswith("text/event-stream")
    assert body.startswith("retry: 2000\n\n")
    (block,) = [b for b in body.split("\n\n") if b.startswith("id:")]
    head, kind, data = block.split("\n")
    assert head == "id: 3" and kind == "event: events"
    assert [r["position"] for r in json.loads(data.removeprefix("data: "))] == [2, 3]
    assert reads.watches[-1].cancelled.is_set()
    # The browser reconnects with the last id it got: the watch goes on after it.
    with web.stream("GET", "/live/stream", headers={"last-event-id": "3"}) as response:
        assert "id:" not in "".join(response.iter_text())
    assert reads.requests[-1].after_position == 3 and reads.requests[-1].max_events_per_message == views.LIVE_BATCH
    reads.watch_then = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many watches")
    with web.stream("GET", "/live/stream", params={"after": "3"}) as response:
        assert "event: problem" in "".join(response.iter_text())
    assert web.get("/live/stream", params={"after": "-1"}).status_code == 400


def test_the_live_page_starts_near_the_newest_event(web, reads):
    reads.events = [event(n) for n in range(1, 31)]
    assert 'value="10"' in web.get("/live").text  # 30 - 20


def test_an_integrity_run_only_from_the_console_itself(web, reads):
    origin = {"origin": "http://127.0.0.1:8040"}
    assert web.post("/integrity/run", data={"card": ""}, headers={"origin": "http://evil.example"}).status_code == 403
    assert web.post("/integrity/run", data={"card": ""}).status_code == 403  # neither Origin nor Referer
    started = web.post("/integrity/run", data={"card": ""}, headers=origin)
    assert started.status_code == 200
    run_id = started.text.split("/integrity/run/")[1].split('"')[0] if "/integrity/run/" in started.text else None
    console = web.app.state.console
    run = console.runs.current
    for _ in range(200):
        if run.done:
            break
        threading.Event().wait(0.01)
    assert run.done and run.report["intact"] and run.phases == {"cards": {"done": 1, "total": 1}}
    done = web.get(f"/integrity/run/{run.id}")
    assert 'data-state="intact"' in done.text and "hx-trigger" not in done.text
    assert run_id in (None, run.id)
    reads.report = apb.IntegrityReport(
        intact=False,
        first_problem=apb.IntegrityProblem(
            kind=apb.INTEGRITY_PROBLEM_KIND_BROKEN_LINK, stream_id="card-1", version=2, reason="x"
        ),
        problems=[apb.IntegrityProblem(kind=apb.INTEGRITY_PROBLEM_KIND_BROKEN_LINK, stream_id="card-1", version=2, reason="x")],
    )
    web.post("/integrity/run", data={"card": "card-1"}, headers={"referer": "http://127.0.0.1:8040/integrity"})
    run = console.runs.current
    for _ in range(200):
        if run.done:
            break
        threading.Event().wait(0.01)
    page = web.get("/integrity")
    assert 'data-state="problem"' in page.text and "broken_link at card-1 v2" in page.text
    assert reads.requests[-1].card_id == "card-1"


def test_statistics_give_the_charts_their_series(reads):
    view = views.statistics(reads, {"from": "2026-12-01T10:00", "to": "2026-12-01T12:00"}, "en")
    charts = view["charts"]
    assert charts["time"]["labels"] == ["12-01 10:00", "12-01 11:00"] and charts["time"]["series"]["failures"] == [2, 2]
    assert charts["channel"]["labels"] == ["medical-institution reader"]
    # events per bucket by channel (stacked): a channel with none in a bucket is 0 there
    assert charts["time_channel"] == {"labels": ["12-01 10:00", "12-01 11:00"], "series": {"medical-institution reader": [3, 0]}}
    assert charts["enumeration"] == {"labels": ["clinic-reader-13"], "series": {"distinct_cards": [4], "failures": [4]}}
    assert charts["locks"]["series"]["locks"] == [1, 1]
    hourly, daily = [r for r in reads.requests if isinstance(r, apb.GetStatisticsRequest)]
    assert hourly.granularity == apb.GRANULARITY_HOUR and daily.granularity == apb.GRANULARITY_DAY
    span = daily.to.ToDatetime() - getattr(daily, "from").ToDatetime()
    assert span.days == views.LOCK_DAYS  # at least two weeks of days, ending with the range's
    assert (
        views.statistics(reads, {"from": "2026-12-02T00:00", "to": "2026-12-01T00:00"}, "en")["error"] == "to: must be after from"
    )


def test_the_statistics_page_carries_its_data_as_json_not_script(web):
    page = web.get("/stats", params={"from": "2026-12-01T10:00", "to": "2026-12-01T12:00"})
    assert '<script type="application/json" id="stats-data">' in page.text
    assert page.text.count("<canvas") == 5 and "chart.umd.min.js" in page.text


def test_security_headers_hosts_and_static_files(web):
    page = web.get("/history")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store" and page.headers["x-content-type-options"] == "nosniff"
    assert web.get("/history", headers={"host": "evil.example:8040"}).status_code == 400  # DNS rebinding
    assert web.get("/static/vendor/htmx.min.js").status_code == 200
    assert web.get("/").status_code == 200  # redirected to the card history
    assert web.post("/history").status_code == 405  # read-only: the one POST is the integrity run


def test_the_console_reaches_no_store_and_no_state_changing_rpc():
    """It is a client: importing it loads neither the store nor SQLAlchemy,
    and the only stubs it makes are AuditService's and PinService's, of
    which it calls GetPinStatus alone."""
    code = (
        "import sys, pinlife.console.app, pinlife.cli.console;"
        "print(sorted(m for m in sys.modules if m.startswith(('pinlife.store', 'sqlalchemy', 'pinlife.bootstrap'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    import inspect

    from pinlife.console import client

    source = inspect.getsource(client.GrpcReads)
    called = {
        name for name in ("VerifyPin", "ChangePin", "ReserveStoreReset", "CounterService", "ConvenienceStore") if name in source
    }
    assert called == set()
