"""The console's views as functions of what they read (`Reads`) and what the
page asked (its query parameters): each returns what its template shows, or
the lines of an export. No HTTP here (app.py) and no gRPC but the answers'
messages, so tests call them with a fake `Reads`.

Events are shown as the auditor's CLI shows them (service/cli/audit.py: the
details line, JST times; exports are its JSON Lines and CSV, field for
field), with the labels of service/domain/labels.py in the page's language."""

from __future__ import annotations

import argparse
import csv
import io
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..cli.args import OUTCOMES, STREAMS, when
from ..cli.audit import EVENT_CSV, PHASES, Kept, csv_row, event_details, record
from ..cli.client import rpc_error
from ..domain import labels
from ..domain.access import Role
from ..domain.audit import COUNT_NAMES, MAX_SUPPLIED_CHECKPOINTS, Outcome
from ..domain.calendar import TOKYO
from ..domain.events import EVENT_TYPES
from ..domain.pins import PinType
from ..v1 import audit_service_pb2 as apb
from ..v1 import common_pb2 as pb
from .client import Reads

PAGE_SIZE = 50  # events per page shown (the API's cursor pages)
EXPORT_PAGE_SIZE = 1000  # the API's largest page
LIVE_BATCH = 100  # events per WatchEvents message


class BadInput(ValueError):
    """A parameter the page cannot use: said on the page, nothing is read."""


def problem(err: grpc.RpcError) -> str:
    """An RPC error in one line, as the CLI says it (code, details, google.rpc details)."""
    head, extra = rpc_error(err)
    extra = [x for x in extra if x not in head]
    return head + (f" ({'; '.join(extra)})" if extra else "")


# -- events ---------------------------------------------------------------------------
def _name(enum_type, value: int, prefix: str) -> str:
    if not value:
        return ""
    try:
        return enum_type.Name(value).removeprefix(prefix).lower()
    except ValueError:  # newer than these stubs
        return str(value)


def jst(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S")


def event_row(e: apb.AuditEvent, lang: labels.Lang) -> dict[str, Any]:
    """One event as a table row: raw names (for filters, titles) and labels."""
    pin = _name(pb.PinType, e.pin_type, "PIN_TYPE_")
    outcome = _name(apb.EventOutcome, e.outcome, "EVENT_OUTCOME_")
    return {
        "position": e.position,
        "version": e.version,
        "time": jst(e.occurred_at),
        "card": e.stream_id if e.stream_kind == apb.STREAM_KIND_CARD else "",
        "stream": e.stream_id,
        "type": e.event_type,
        "type_label": labels.event_type(e.event_type, lang),
        "pin_type": pin,
        "pin_label": labels.pin_type(pin, lang) if pin else "",
        "channel": e.channel,
        "channel_label": labels.channel(e.channel, lang) if e.channel else "",
        "terminal": e.terminal_id,
        "office": e.office_id,
        "outcome": outcome,
        "outcome_label": labels.outcome(outcome, lang) if outcome else "",
        "details": event_details(e),
    }


# -- card history ---------------------------------------------------------------------
def pin_states(status, lang: labels.Lang) -> dict[str, Any]:
    """GetPinStatus as the card panel shows it."""
    pins = []
    for p in status.pins:
        pin = _name(pb.PinType, p.pin_type, "PIN_TYPE_")
        pins.append(
            {
                "pin_type": pin,
                "label": labels.pin_type(pin, lang),
                "status": _name(pb.PinStatus, p.status, "PIN_STATUS_"),
                "failures": p.consecutive_failures,
                "remaining": p.remaining_tries,
                "limit": p.retry_limit,
                "locked_at": jst(p.locked_at) if p.HasField("locked_at") else "",
            }
        )
    return {
        "card_status": _name(pb.CardStatus, status.card_status, "CARD_STATUS_"),
        "pins": pins,
        "version": status.stream_version,
    }


def history(reads: Reads, params: Mapping[str, str], lang: labels.Lang, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """A card's events, a page at a time (the API's cursor), and on the
    first page its PIN states. Nothing is read without a card id."""
    card = params.get("card", "").strip()
    order = "newest" if params.get("order") == "newest" else "oldest"
    token = params.get("token", "")
    out: dict[str, Any] = {"card": card, "order": order, "rows": [], "next_token": "", "status": None, "error": ""}
    if not card:
        return out
    request = apb.GetCardHistoryRequest(
        card_id=card,
        order=apb.ORDER_NEWEST_FIRST if order == "newest" else apb.ORDER_OLDEST_FIRST,
        page_size=page_size,
        page_token=token,
    )
    try:
        response = reads.history(request)
        if not token:
            out["status"] = pin_states(reads.pin_status(card), lang)
    except grpc.RpcError as err:
        out["error"] = problem(err)
        return out
    out.update(
        rows=[event_row(e, lang) for e in response.events],
        next_token=response.next_page_token,
        stream_version=response.stream_version,
    )
    return out


# -- query ----------------------------------------------------------------------------
def _time(params: Mapping[str, str], name: str) -> datetime | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        return when(text)
    except argparse.ArgumentTypeError as exc:
        raise BadInput(f"{name}: {exc}") from None


def _ts(at: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at.astimezone(UTC))
    return t


@dataclass(frozen=True)
class Query:
    """A query as the form gives it (each list a multi-select)."""

    start: str = ""
    end: str = ""
    event_types: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    terminal: str = ""
    office: str = ""
    pin_type: str = ""
    outcomes: tuple[str, ...] = ()
    streams: str = "all"
    order: str = "oldest"

    @classmethod
    def of(cls, params) -> Query:
        """From the page's parameters (a Starlette QueryParams, or a dict of lists)."""

        def many(name: str) -> tuple[str, ...]:
            values = params.getlist(name) if hasattr(params, "getlist") else params.get(name, [])
            return tuple(v.strip() for v in values if v.strip())

        def one(name: str) -> str:
            value = params.get(name, "")
            return (value[0] if isinstance(value, list) and value else value or "").strip()

        return cls(
            start=one("from"),
            end=one("to"),
            event_types=many("event_type"),
            channels=many("channel"),
            terminal=one("terminal"),
            office=one("office"),
            pin_type=one("pin_type"),
            outcomes=many("outcome"),
            streams=one("streams") or "all",
            order="newest" if one("order") == "newest" else "oldest",
        )

    def request(self, page_size: int, token: str = "") -> apb.QueryEventsRequest:
        """QueryEventsRequest; BadInput for what the page can tell is wrong
        (the server refuses the rest, naming the field)."""
        times = {"from": self.start, "to": self.end}
        f = apb.EventFilter(
            event_types=self.event_types, channels=self.channels, terminal_id=self.terminal, office_id=self.office
        )
        if (start := _time(times, "from")) is not None:
            getattr(f, "from").CopyFrom(_ts(start))
        if (end := _time(times, "to")) is not None:
            f.to.CopyFrom(_ts(end))
        if self.pin_type:
            if self.pin_type not in {t.value for t in PinType}:
                raise BadInput(f"pin_type: unknown PIN type {self.pin_type!r}")
            f.pin_type = pb.PinType.Value(f"PIN_TYPE_{self.pin_type.upper()}")
        for name in self.outcomes:
            if name not in OUTCOMES:
                raise BadInput(f"outcome: unknown outcome {name!r}")
            f.outcomes.append(apb.EventOutcome.Value(OUTCOMES[name]))
        if self.streams not in STREAMS:
            raise BadInput(f"streams: one of {', '.join(STREAMS)}")
        return apb.QueryEventsRequest(
            filter=f,
            order=apb.ORDER_NEWEST_FIRST if self.order == "newest" else apb.ORDER_OLDEST_FIRST,
            stream_kind=apb.StreamKind.Value(STREAMS[self.streams]),
            page_size=page_size,
            page_token=token,
        )

    def params(self) -> list[tuple[str, str]]:
        """Back to URL parameters (the export links, the next page)."""
        out = [("from", self.start), ("to", self.end)]
        out += [("event_type", t) for t in self.event_types] + [("channel", c) for c in self.channels]
        out += [("terminal", self.terminal), ("office", self.office), ("pin_type", self.pin_type)]
        out += [("outcome", o) for o in self.outcomes] + [("streams", self.streams), ("order", self.order)]
        return [(k, v) for k, v in out if v]


def choices(lang: labels.Lang) -> dict[str, list[tuple[str, str]]]:
    """The form's options: (value, label)."""
    return {
        "event_types": [(t, f"{labels.event_type(t, lang)} ({t})") for t in EVENT_TYPES],
        "channels": [(r.value, labels.channel(r.value, lang)) for r in Role if r is not Role.DEVELOPMENT],
        "pin_types": [(t.value, labels.pin_type(t.value, lang)) for t in PinType],
        "outcomes": [(o.value, labels.outcome(o.value, lang)) for o in Outcome],
    }


def query(reads: Reads, q: Query, token: str, lang: labels.Lang, run: bool, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """A page of the query's events (none read until the form is sent: `run`)."""
    out: dict[str, Any] = {"q": q, "rows": [], "next_token": "", "error": "", "ran": False}
    if not run:
        return out
    try:
        response = reads.query(q.request(page_size, token))
    except BadInput as exc:
        out["error"] = str(exc)
        return out
    except grpc.RpcError as err:
        out["error"] = problem(err)
        return out
    out.update(rows=[event_row(e, lang) for e in response.events], next_token=response.next_page_token, ran=True)
    return out


def export(reads: Reads, q: Query, fmt: str) -> Iterator[str]:
    """Every event the query matches, page after page, as the CLI writes
    them: JSON Lines (the whole envelope, the payload as JSON) or CSV (its
    columns). BadInput or the RPC error before the first line."""
    request = q.request(EXPORT_PAGE_SIZE)
    first = reads.query(request)  # errors now, before a response has started

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if fmt == "csv":
            writer.writerow(EVENT_CSV)
        response = first
        while True:
            for e in response.events:
                if fmt == "csv":
                    writer.writerow(csv_row(e))
                else:
                    buffer.write(json.dumps(record(e), ensure_ascii=False, separators=(",", ":")) + "\n")
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
            response = reads.query(request)

    return lines()


# -- live -----------------------------------------------------------------------------
def latest_position(reads: Reads) -> int:
    """The position of the newest event (0 for an empty log): one QueryEvents, newest first."""
    response = reads.query(apb.QueryEventsRequest(order=apb.ORDER_NEWEST_FIRST, page_size=1))
    return max((e.position for e in response.events), default=0)


def live_rows(response: apb.WatchEventsResponse, lang: labels.Lang) -> list[dict[str, Any]]:
    events = list(response.events) or ([response.event] if response.HasField("event") else [])
    return [event_row(e, lang) for e in events]


# -- integrity ------------------------------------------------------------------------
@dataclass
class Run:
    """One VerifyIntegrity call: its progress by phase, then its report (or error)."""

    id: str
    card: str
    started: datetime
    checkpoints: int
    phases: dict[str, dict[str, int]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: str = ""
    finished: datetime | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None


def report_view(r: apb.IntegrityReport) -> dict[str, Any]:
    def problem_view(p) -> dict[str, Any]:
        return {
            "kind": _name(apb.IntegrityProblemKind, p.kind, "INTEGRITY_PROBLEM_KIND_"),
            "stream": p.stream_id,
            "version": p.version or "",
            "position": p.position or "",
            "reason": p.reason,
        }

    return {
        "intact": r.intact,
        "events": r.events_checked,
        "cards": r.cards_checked,
        "head": r.head_position,
        "checkpoints": r.checkpoints_checked,
        "first": problem_view(r.first_problem) if r.HasField("first_problem") else None,
        "problems": [problem_view(p) for p in r.problems],
    }


class IntegrityRuns:
    """The console's integrity runs: one at a time (the server runs one
    whole-store check at once per instance anyway), in a thread of its own;
    the last finished one is kept for the page (in memory: a restarted
    console has none until it runs one)."""

    def __init__(self, reads: Reads, kept: str | None) -> None:
        self.reads, self.kept = reads, kept
        self.lock = threading.Lock()
        self.current: Run | None = None
        self.last: Run | None = None

    def kept_notes(self) -> list[dict[str, Any]]:
        """The auditor's kept checkpoints of this server (`pinlife audit checkpoint` keeps them)."""
        if not self.kept:
            return []
        try:
            return Kept(self.kept).of_server(self.reads.server)
        except SystemExit:  # unreadable: Kept says so on stderr as the CLI would; the page shows none
            return []

    def start(self, card: str = "") -> Run:
        """A new run unless one is running (then that one)."""
        with self.lock:
            if self.current is not None and not self.current.done:
                return self.current
            notes = [] if card else [k["note"] for k in self.kept_notes()][-MAX_SUPPLIED_CHECKPOINTS:]
            run = Run(id=uuid.uuid4().hex, card=card, started=datetime.now(UTC), checkpoints=len(notes))
            self.current = run
        threading.Thread(target=self._run, args=(run, notes), name="console-verify", daemon=True).start()
        return run

    def get(self, run_id: str) -> Run | None:
        for run in (self.current, self.last):
            if run is not None and run.id == run_id:
                return run
        return None

    def _run(self, run: Run, notes: list[str]) -> None:
        try:
            for answer in self.reads.verify(apb.VerifyIntegrityRequest(card_id=run.card, checkpoints=notes)):
                if answer.WhichOneof("kind") == "progress":
                    p = answer.progress
                    run.phases[p.phase] = {"done": p.done, "total": p.total}
                else:
                    run.report = report_view(answer.report)
        except grpc.RpcError as err:
            run.error = problem(err)
        except Exception as exc:  # noqa: BLE001 - said on the page, not lost in a thread
            run.error = f"internal error: {type(exc).__name__}: {exc}"
        if run.report is None and not run.error:
            run.error = "the server ended the check without a report"
        run.finished = datetime.now(UTC)
        with self.lock:
            self.last = run


def phase_rows(run: Run) -> list[dict[str, Any]]:
    rows = []
    for phase, p in run.phases.items():
        percent = round(100 * p["done"] / p["total"]) if p["total"] else 100
        rows.append({"phase": phase, "label": PHASES.get(phase, phase), **p, "percent": percent})
    return rows


def checkpoint(reads: Reads) -> dict[str, Any]:
    try:
        r = reads.checkpoint()
    except grpc.RpcError as err:
        return {"error": problem(err)}
    return {"note": r.note, "origin": r.origin, "tree_size": r.tree_size, "root": r.root_hash, "key": r.verifier_key}


# -- statistics -----------------------------------------------------------------------
def _range(params: Mapping[str, str], day: bool, now: datetime) -> tuple[datetime, datetime]:
    """The range asked for; by default the last 24 hours (7 days by day)
    up to the end of the current hour (day), in Asia/Tokyo, as `pinlife audit stats`."""
    end = _time(params, "to")
    if end is None:
        local = now.astimezone(TOKYO)
        floor = (
            local.replace(hour=0, minute=0, second=0, microsecond=0) if day else local.replace(minute=0, second=0, microsecond=0)
        )
        end = floor + (timedelta(days=1) if day else timedelta(hours=1))
    start = _time(params, "from")
    return (start if start is not None else end - (timedelta(days=7) if day else timedelta(hours=24))), end


def _stats_request(start: datetime, end: datetime, day: bool, top: int) -> apb.GetStatisticsRequest:
    request = apb.GetStatisticsRequest(granularity=apb.GRANULARITY_DAY if day else apb.GRANULARITY_HOUR, top_terminals=top)
    getattr(request, "from").CopyFrom(_ts(start))
    request.to.CopyFrom(_ts(end))
    return request


LOCK_DAYS = 14  # locks per day: at least this many days, ending with the range's last


def _bucket(key: str, day: bool) -> str:
    try:
        at = datetime.fromisoformat(key).astimezone(TOKYO)
    except ValueError:
        return key
    return at.strftime("%m-%d") if day else at.strftime("%m-%d %H:00")


def statistics(reads: Reads, params: Mapping[str, str], lang: labels.Lang, now: datetime | None = None) -> dict[str, Any]:
    """GetStatistics over the range (by hour or day), and by day for the
    locks per day: what the charts plot and the tables under them list."""
    day = params.get("granularity") == "day"
    try:
        top = int(params.get("top") or 10)
    except ValueError:
        top = 10
    top = min(max(top, 1), 100)
    out: dict[str, Any] = {"granularity": "day" if day else "hour", "top": top, "error": "", "charts": None}
    try:
        start, end = _range(params, day, now or datetime.now(UTC))
        if end <= start:
            raise BadInput("to: must be after from")
    except BadInput as exc:
        out["error"] = str(exc)
        return out
    out.update(start=start.astimezone(TOKYO).strftime("%Y-%m-%dT%H:%M"), end=end.astimezone(TOKYO).strftime("%Y-%m-%dT%H:%M"))
    last_day = (end - timedelta(microseconds=1)).astimezone(TOKYO).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = min(
        start.astimezone(TOKYO).replace(hour=0, minute=0, second=0, microsecond=0), last_day - timedelta(days=LOCK_DAYS - 1)
    )
    try:
        s = reads.statistics(_stats_request(start, end, day, top))
        by_day = reads.statistics(_stats_request(first_day, last_day + timedelta(days=1), True, 1))
    except grpc.RpcError as err:
        out["error"] = problem(err)
        return out
    shown = ("events", "checks", "failures", "locks", "refusals")
    out["total"] = {c: getattr(s.total, c) for c in COUNT_NAMES}
    out["charts"] = {
        "time": {
            "labels": [_bucket(b.key, day) for b in s.by_time],
            "series": {c: [getattr(b.counts, c) for b in s.by_time] for c in shown},
        },
        "time_channel": {
            "labels": [_bucket(b.key, day) for b in s.by_time],
            "series": {
                labels.channel(ch, lang) if ch else "—": [
                    sum(r.counts.events for r in b.by_channel if r.key == ch) for b in s.by_time
                ]
                for ch in sorted({r.key for b in s.by_time for r in b.by_channel})
            },
        },
        "channel": {
            "labels": [labels.channel(r.key, lang) if r.key else "—" for r in s.by_channel],
            "series": {c: [getattr(r.counts, c) for r in s.by_channel] for c in ("checks", "failures", "locks", "refusals")},
        },
        "enumeration": {
            "labels": [t.terminal_id for t in s.most_distinct_card_failures],
            "series": {
                "distinct_cards": [t.distinct_cards for t in s.most_distinct_card_failures],
                "failures": [t.failures for t in s.most_distinct_card_failures],
            },
        },
        "locks": {
            "labels": [_bucket(b.key, True) for b in by_day.by_time],
            "series": {"locks": [b.counts.locks for b in by_day.by_time]},
        },
    }
    out["by_channel"] = [
        {"key": r.key, "label": labels.channel(r.key, lang) if r.key else "—", **{c: getattr(r.counts, c) for c in COUNT_NAMES}}
        for r in s.by_channel
    ]
    out["enumeration"] = [
        {"terminal": t.terminal_id, "distinct_cards": t.distinct_cards, "failures": t.failures}
        for t in s.most_distinct_card_failures
    ]
    out["count_names"] = COUNT_NAMES
    return out
