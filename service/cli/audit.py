"""`pinlife audit`: the auditor's client of AuditService
(protos/pinlife/v1/audit_service.proto): its usage is in main.py
(AUDIT_USAGE). Every failure is one line and an exit code (service/cli/exits.py);
Ctrl-C ends `watch` (130)."""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..domain.audit import COUNT_NAMES, MAX_PAGE_SIZE, MAX_SUPPLIED_CHECKPOINTS
from ..domain.calendar import TOKYO
from ..keys.notes import Checkpoint, NoteError, open_note, parse_checkpoint
from ..v1 import audit_service_pb2 as apb
from ..v1 import audit_service_pb2_grpc
from ..v1 import common_pb2 as pb
from . import proofs
from .args import OUTCOMES, STREAMS, listed
from .client import channel, close, metadata, rpc_error, uses_tls
from .exits import PROBLEM, fail

PHASES = {  # VerifyIntegrity's progress phases, as the bar names them
    "positions": "positions 1..head",
    "cards": "cards: links, MACs, projection, lawful history",
    "terminals": "terminal streams",
    "checkpoints": "checkpoints",
}
OUTCOME_STYLES = {"success": "green", "failure": "yellow", "locked": "bold red", "refused": "magenta", "other": "dim"}
EVENT_CSV = (
    "position",
    "occurred_at",
    "stream_id",
    "stream_kind",
    "version",
    "event_type",
    "pin_type",
    "channel",
    "terminal_id",
    "office_id",
    "outcome",
    "request_id",
    "event_id",
    "schema_version",
    "key_id",
    "hash",
    "prev_hash",
    "payload",
)


class Problem(Exception):
    """Something the command was asked to confirm does not hold (exit 1)."""


# -- running ------------------------------------------------------------------------
def guarded(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """Every failure as one line on stderr and an exit code; never a traceback."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> None:
        try:
            fn(args)
        except grpc.RpcError as err:
            head, extra = rpc_error(err, args)
            extra = [x for x in extra if x not in head]
            fail(head + (f" ({'; '.join(extra)})" if extra else "") + _hint(err, uses_tls(args)))
        except Problem as exc:
            fail(str(exc), code=PROBLEM)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # a reader such as `head` stopped reading: leave quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback only on request
            if os.environ.get("PINLIFE_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (PINLIFE_DEBUG=1 shows where)")
        finally:
            close(args)

    return run


def _hint(err, tls: bool) -> str:
    """What a connection that closes at once most likely means."""

    details = (err.details() or "").lower()
    if err.code() != grpc.StatusCode.UNAVAILABLE or not ("socket closed" in details or "handshake" in details):
        return ""
    if tls:
        return " (the TLS handshake failed: check --ca, --cert and --key)"
    return " (does the server require mutual TLS? --ca, --cert and --key)"


def _stub(args):
    return audit_service_pb2_grpc.AuditServiceStub(channel(args))


def _call_options(args, streaming: bool = False) -> dict[str, Any]:
    timeout = args.timeout if args.timeout is not None else (None if streaming else 30.0)
    return {"timeout": timeout, "metadata": metadata(args)}


def _format(args) -> str:
    return args.format or ("table" if sys.stdout.isatty() else "jsonl")


def _read(option: str, name: str) -> str:
    try:
        with open(name, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {option} {name}: {getattr(exc, 'strerror', None) or exc}")


def _ts(at: datetime):
    t = Timestamp()
    t.FromDatetime(at.astimezone(UTC))
    return t


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- events: rendering --------------------------------------------------------------
def _short(enum_type, value: int, prefix: str) -> str:
    if not value:
        return ""
    try:
        return enum_type.Name(value).removeprefix(prefix).lower()
    except ValueError:  # a value newer than these stubs
        return str(value)


def _plain(value: Any) -> Any:
    """A Struct's numbers are floats: whole ones back to ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def payload(e) -> dict[str, Any]:
    """The payload as JSON, its fields in the order of the typed payload's
    message (a Struct keeps none), then any others by name."""

    values = _plain(MessageToDict(e.payload.json))
    kind = e.payload.WhichOneof("kind")
    known = [f.name for f in getattr(e.payload, kind).DESCRIPTOR.fields] if kind else []
    return {k: values[k] for k in [*known, *sorted(values)] if k in values}


def record(e) -> dict[str, Any]:
    """The whole envelope (canonical proto3 JSON), the payload as JSON."""

    out = MessageToDict(e, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    out["payload"] = payload(e)
    return {f.name: out[f.name] for f in e.DESCRIPTOR.fields if f.name in out}  # in the proto's order


def _tokyo(ts, iso: bool = False) -> str:
    at = ts.ToDatetime(tzinfo=UTC).astimezone(TOKYO)
    return at.isoformat() if iso else at.strftime("%Y-%m-%d %H:%M:%S")


def event_details(e) -> str:
    """An event's payload as one line of key=value (the CLI's tables and the console's)."""
    parts = []
    for k, v in payload(e).items():
        if v in ("", None, [], {}):
            continue
        parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(parts)


def _cells(e) -> dict[str, str]:
    return {
        "position": str(e.position),
        "occurred_at": _tokyo(e.occurred_at),
        "type": e.event_type,
        "card": e.stream_id if e.stream_kind == apb.STREAM_KIND_CARD else "",
        "pin_type": _short(pb.PinType, e.pin_type, "PIN_TYPE_"),
        "channel": e.channel,
        "terminal": e.terminal_id,
        "office": e.office_id,
        "outcome": _short(apb.EventOutcome, e.outcome, "EVENT_OUTCOME_"),
        "details": event_details(e),
    }


def csv_row(e) -> list[Any]:
    """An event as a row of EVENT_CSV (the CLI's CSV and the console's export)."""
    return [
        e.position,
        _tokyo(e.occurred_at, iso=True),
        e.stream_id,
        _short(apb.StreamKind, e.stream_kind, "STREAM_KIND_"),
        e.version,
        e.event_type,
        _short(pb.PinType, e.pin_type, "PIN_TYPE_"),
        e.channel,
        e.terminal_id,
        e.office_id,
        _short(apb.EventOutcome, e.outcome, "EVENT_OUTCOME_"),
        e.request_id,
        e.event_id,
        e.schema_version,
        e.key_id,
        e.hash,
        e.prev_hash,
        json.dumps(payload(e), ensure_ascii=False, separators=(",", ":")),
    ]


COLUMNS: tuple[tuple[str, str, dict[str, Any]], ...] = (  # key, header, rich column options
    ("position", "pos", {"justify": "right", "style": "dim"}),
    ("occurred_at", "occurred at (JST)", {"min_width": 19}),
    ("type", "type", {"style": "bold"}),
    ("card", "card", {}),
    ("pin_type", "PIN", {}),
    ("channel", "channel", {}),
    ("terminal", "terminal", {}),
    ("office", "office", {}),
    ("outcome", "outcome", {}),
    ("details", "details", {"style": "dim"}),
)
ALWAYS_SHOWN = {"position", "occurred_at", "type", "outcome"}
DROPPED_FIRST = ("office", "channel", "pin_type", "terminal", "details")  # on a narrow terminal
DETAILS_MIN = 24
# A `watch` line: each column's width (its gap included), the details after
# them; on a narrow terminal the columns of LIVE_DROPPED_FIRST go first.
LIVE_WIDTHS = {"position": 9, "occurred_at": 21, "type": 25, "card": 16, "pin_type": 18, "channel": 15, "terminal": 16}
LIVE_WIDTHS |= {"office": 18, "outcome": 9}
LIVE_DROPPED_FIRST = ("office", "channel", "pin_type", "terminal")
HEADERS = {key: header for key, header, _ in COLUMNS}


def not_shown(dropped: Iterable[str], width: int) -> str:
    """What a narrow terminal left out, said (empty when nothing was): event
    columns by their headers, in the table's order; other names as given."""
    dropped = list(dropped)
    names = [header for key, header in HEADERS.items() if key in dropped] + [d for d in dropped if d not in HEADERS]
    if not names:
        return ""
    return (
        f"not shown at {width} columns: {', '.join(names)} (a wider terminal shows them; --format jsonl or csv has every field)"
    )


class EventWriter:
    """Events out in the chosen format: jsonl and csv as they come, a table
    at the end, or (live) a line per event for `watch`."""

    def __init__(self, fmt: str, live: bool = False):
        self.fmt, self.live, self.count = fmt, live, 0
        self.rows: list[dict[str, str]] = []
        self.console = _console() if fmt == "table" else None
        self.csv = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
        self.dropped: list[str] = []  # the columns a narrow terminal left out
        if self.csv is not None:
            self.csv.writerow(EVENT_CSV)
            sys.stdout.flush()
        self.live_columns = self._live_columns() if live and self.console is not None else []

    def _live_columns(self) -> list[str]:
        """The columns of a `watch` line that fit the terminal, the details
        last (while DETAILS_MIN of them fit); self.dropped says which did not."""
        assert self.console is not None
        shown = list(LIVE_WIDTHS)
        width = lambda: sum(LIVE_WIDTHS[k] for k in shown)  # noqa: E731
        for key in LIVE_DROPPED_FIRST:
            if width() + DETAILS_MIN <= self.console.width:
                break
            shown.remove(key)
            self.dropped.append(key)
        if width() + DETAILS_MIN <= self.console.width:
            shown.append("details")
        else:
            self.dropped.append("details")
        return shown

    def header(self) -> None:
        """The column names above the lines of a `watch` (table format)."""
        if self.console is None or not self.live:
            return
        line = Text(style="bold cyan")
        for key in self.live_columns:
            last = key == self.live_columns[-1]  # no padding after the last column
            line.append(HEADERS[key] if last else f"{HEADERS[key]:<{LIVE_WIDTHS[key]}}")
        self.console.print(line, overflow="ellipsis", no_wrap=True, crop=True, soft_wrap=False)

    def add(self, events: Iterable) -> None:
        for e in events:
            self.count += 1
            if self.fmt == "jsonl":
                sys.stdout.write(json.dumps(record(e), ensure_ascii=False, separators=(",", ":")) + "\n")
            elif self.csv is not None:
                self.csv.writerow(csv_row(e))
            elif self.live:
                self._line(_cells(e))
            else:
                self.rows.append(_cells(e))
            if self.live:
                sys.stdout.flush()  # each event as it arrives, into a pipe too

    def _line(self, c: dict[str, str]) -> None:
        line = Text()
        for key in self.live_columns:
            value = f"#{c[key]}" if key == "position" else c[key]
            if key == "details":
                line.append(value, "dim")
                continue
            width = LIVE_WIDTHS[key]
            if len(value) >= width:  # cut, said with an ellipsis, the gap kept
                value = value[: width - 2] + "…"
            style = {"position": "dim", "type": "bold", "outcome": OUTCOME_STYLES.get(value, "")}.get(key, "")
            last = key == self.live_columns[-1]  # no padding after the last column
            line.append(f"{value or '-':<{0 if last else width}}", style if value else "dim")
        assert self.console is not None  # live lines are the table format's
        self.console.print(line, overflow="ellipsis", no_wrap=True, crop=True, soft_wrap=False)

    def finish(self, caption: str, title: str | None = None, hide: Iterable[str] = ()) -> None:
        """The table, one line per event, as wide as the terminal: a column
        every row leaves empty (or hidden) is left out, then, while the
        details would be narrower than DETAILS_MIN, the least telling ones,
        which the caption names."""
        if self.console is None or self.live:  # the console is the table format's
            return

        shown = {
            key: max([len(header), *(len(row[key]) for row in self.rows)])
            for key, header, _ in COLUMNS
            if key not in hide and (key in ALWAYS_SHOWN or any(row[key] for row in self.rows))
        }
        room = lambda: self.console.width - sum(w for k, w in shown.items() if k != "details") - 3 * len(shown)  # noqa: E731
        for key in DROPPED_FIRST:
            if room() >= DETAILS_MIN or "details" not in shown:
                break
            if shown.pop(key, None) is not None:
                self.dropped.append(key)
        if note := not_shown(self.dropped, self.console.width):
            caption += f"; {note}"
        table = Table(
            title=title,
            title_justify="left",
            title_style="bold",
            caption=caption,
            caption_justify="left",
            header_style="bold cyan",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for key, header, options in COLUMNS:
            if key in shown:
                width = max(room(), 8) if key == "details" else None
                table.add_column(header, no_wrap=True, overflow="ellipsis", width=width, **options)
        for row in self.rows:
            table.add_row(*(Text(row[key], OUTCOME_STYLES.get(row[key], "") if key == "outcome" else "") for key in shown))
        self.console.print(table)


def _filter(args, card: bool = False):
    f = apb.EventFilter(event_types=listed(args.event_type))
    if args.start is not None:
        getattr(f, "from").CopyFrom(_ts(args.start))
    if args.end is not None:
        f.to.CopyFrom(_ts(args.end))
    if args.pin_type:
        f.pin_type = pb.PinType.Value(f"PIN_TYPE_{args.pin_type.upper()}")
    for name in listed(args.outcome):
        if name.lower() not in OUTCOMES:
            fail(f"unknown outcome {name!r}; one of {', '.join(dict.fromkeys(OUTCOMES))}")
        f.outcomes.append(apb.EventOutcome.Value(OUTCOMES[name.lower()]))
    if not card:
        f.channels.extend(listed(args.channel))
        f.terminal_id = args.filter_terminal or ""
        f.office_id = args.filter_office or ""
    return f


def _pages(call, request, args) -> Iterator[tuple[Any, list]]:
    """Each page's response and its events, following next_page_token until
    no more match or --limit events were read."""
    got, limit = 0, args.limit
    while True:
        request.page_size = min(MAX_PAGE_SIZE, limit - got) if limit else MAX_PAGE_SIZE
        response = call(request, **_call_options(args))
        events = list(response.events)[: (limit - got) if limit else None]
        got += len(events)
        yield response, events
        if not response.next_page_token or (limit and got >= limit):
            return
        request.page_token = response.next_page_token


def _more(response, args, shown: int) -> str:
    return f"; more match (--limit {args.limit})" if args.limit and shown >= args.limit and response.next_page_token else ""


@guarded
def history(args: argparse.Namespace) -> None:
    order = apb.ORDER_NEWEST_FIRST if args.newest_first else apb.ORDER_OLDEST_FIRST
    request = apb.GetCardHistoryRequest(card_id=args.card, order=order, filter=_filter(args, card=True))
    out = EventWriter(_format(args))
    for response, events in _pages(_stub(args).GetCardHistory, request, args):  # noqa: B007 - the last page's response
        out.add(events)
    out.finish(
        f"{out.count} events (stream version {response.stream_version}){_more(response, args, out.count)}",
        title=f"card {args.card}",
        hide={"card"},
    )


@guarded
def query(args: argparse.Namespace) -> None:
    order = apb.ORDER_NEWEST_FIRST if args.newest_first else apb.ORDER_OLDEST_FIRST
    request = apb.QueryEventsRequest(filter=_filter(args), order=order, stream_kind=apb.StreamKind.Value(STREAMS[args.streams]))
    out = EventWriter(_format(args))
    response = None
    for response, events in _pages(_stub(args).QueryEvents, request, args):  # noqa: B007 - the last page's response
        out.add(events)
    out.finish(f"{out.count} events{_more(response, args, out.count)}")


class Backoff:
    """Exponential backoff with full jitter: the n-th wait (from 0) is
    uniform in [0, min(cap, base * 2**n)), so watchers that lost one server
    together do not come back together. reset() after a success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self.rand, self.attempt = base, cap, rand, 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return self.rand() * ceiling

    def reset(self) -> None:
        self.attempt = 0


# What `watch` waits and measures with (tests put fakes here).
WATCH_BACKOFF = {"base": 0.5, "cap": 30.0}
_sleep: Callable[[float], None] = time.sleep
_monotonic: Callable[[], float] = time.monotonic
_random: Callable[[], float] = random.random


def _say(message: str) -> None:
    """A line about the watch itself (not an event): stderr, stdout keeps the events."""
    print(f"pinlife: {message}", file=sys.stderr, flush=True)


@guarded
def watch(args: argparse.Namespace) -> None:
    """WatchEvents until Ctrl-C (or --limit). A header first (the server,
    the position; in a table the column names). A connection lost once the
    server was reached is re-established after a wait that doubles from
    0.5 s up to 30 s, with full jitter (Backoff), one line on stderr per
    attempt, resuming after the last position received (the server never
    skips or repeats one); the waits start again from 0.5 s once an attempt
    delivers an event or stays open 30 s. An unreachable server at the
    start is an error (exit 2), as any error other than UNAVAILABLE is."""

    out = EventWriter(_format(args), live=True)
    header = f"watching {args.server}: the events after position {args.after}, as they are written (Ctrl-C ends)"
    if out.console is not None and (note := not_shown(out.dropped, out.console.width)):
        header += f"; {note}"
    _say(header)
    out.header()

    reached = threading.Event()  # the server was reached once: from then on a lost connection is retried

    def connected(state: grpc.ChannelConnectivity) -> None:
        if state == grpc.ChannelConnectivity.READY:
            reached.set()

    channel(args).subscribe(connected, try_to_connect=True)
    backoff = Backoff(rand=_random, **WATCH_BACKOFF)
    after, retrying = args.after, False
    while True:
        opened, delivered = _monotonic(), False
        call = _stub(args).WatchEvents(apb.WatchEventsRequest(after_position=after), **_call_options(args, streaming=True))
        try:
            for response in call:
                if retrying:
                    _say(f"watching again after position {after}")
                    retrying = False
                events = list(response.events) or [response.event]
                out.add(events)
                after, delivered = events[-1].position, True
                if args.limit and out.count >= args.limit:
                    call.cancel()
                    return
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or not reached.is_set():
                raise
            if delivered or _monotonic() - opened >= WATCH_BACKOFF["cap"]:
                backoff.reset()
            delay = backoff.next()
            _say(f"{rpc_error(err)[0]}; retrying in {delay:.1f} s (attempt {backoff.attempt}), to resume after position {after}")
            close(args)  # a new channel for the next attempt: gRPC's own reconnect waits (up to 120 s) do not apply
            args._channel = None
            _sleep(delay)
            retrying = True
        except KeyboardInterrupt:
            call.cancel()
            raise


# -- verify and checkpoints --------------------------------------------------------
def _verify(args, card: str, notes: list[str]):
    """VerifyIntegrity: a progress bar on stderr (when it is a terminal), then the report."""

    console = _console(stderr=True)
    tasks: dict[str, Any] = {}
    report = None
    columns = (SpinnerColumn(), TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        for answer in _stub(args).VerifyIntegrity(
            apb.VerifyIntegrityRequest(card_id=card, checkpoints=notes), **_call_options(args, streaming=True)
        ):
            if answer.WhichOneof("kind") == "progress":
                p = answer.progress
                if p.phase not in tasks:
                    for task in tasks.values():  # progress is advisory: a phase begun means the last one ended
                        bar.update(task, completed=bar.tasks[task].total)
                    tasks[p.phase] = bar.add_task(PHASES.get(p.phase, p.phase), total=max(p.total, 1))
                bar.update(tasks[p.phase], completed=p.done, total=max(p.total, 1))
            elif answer.WhichOneof("kind") == "report":
                report = answer.report
                for task in tasks.values():
                    bar.update(task, completed=bar.tasks[task].total)
    if report is None:
        fail("the server ended the check without a report")
    return report


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _problem_text(p) -> str:
    where = " ".join(
        x for x in (p.stream_id, f"v{p.version}" if p.version else "", f"position {p.position}" if p.position else "") if x
    )
    kind = _short(apb.IntegrityProblemKind, p.kind, "INTEGRITY_PROBLEM_KIND_")
    return f"{kind}{f' at {where}' if where else ''}: {p.reason}"


def _show_report(report, fmt: str) -> None:
    if fmt == "jsonl":
        _emit(json.dumps(MessageToDict(report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)))
        return
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(
            [
                "intact",
                "events_checked",
                "cards_checked",
                "head_position",
                "checkpoints_checked",
                "problem",
                "stream_id",
                "version",
                "position",
                "reason",
            ]
        )
        head = [
            str(report.intact).lower(),
            report.events_checked,
            report.cards_checked,
            report.head_position,
            report.checkpoints_checked,
        ]
        for p in report.problems or [None]:
            kind = _short(apb.IntegrityProblemKind, p.kind, "INTEGRITY_PROBLEM_KIND_") if p else ""
            w.writerow(head + ([kind, p.stream_id, p.version, p.position, p.reason] if p else ["", "", "", "", ""]))
        return

    console = _console()
    summary = f"{_n(report.events_checked, 'event')} and {_n(report.cards_checked, 'card')} checked"
    if report.head_position:
        summary += f", up to position {report.head_position}"
    if report.checkpoints_checked:
        summary += f"; {_n(report.checkpoints_checked, 'checkpoint')}"
    if report.intact:
        console.print(Text.assemble(("✓ intact", "bold green"), f": {summary}"))
        return
    console.print(Text.assemble(("✗ problem found", "bold red"), ": ", _problem_text(report.first_problem)))
    table = Table(caption=summary, caption_justify="left", header_style="bold cyan")
    for header in ("problem", "stream", "version", "position", "reason"):
        table.add_column(header, overflow="fold")
    for p in report.problems:
        kind = _short(apb.IntegrityProblemKind, p.kind, "INTEGRITY_PROBLEM_KIND_")
        table.add_row(Text(kind, "red"), Text(p.stream_id), str(p.version or ""), str(p.position or ""), Text(p.reason))
    console.print(table)


@guarded
def verify(args: argparse.Namespace) -> None:
    """The whole store is checked, and (with --keep) the server's latest
    checkpoint against the newest kept one of the same server with a
    consistency proof checked here, then kept: the kept checkpoints are then
    held by the log as far as the store's own latest checkpoint is (which
    the check compares with the log). Kept checkpoints no proof links yet
    (kept before proofs, or when the proof fails) are supplied to the check,
    up to the server's bound, as before."""
    notes = [_read("--checkpoint", name) for name in args.checkpoint or ()]
    extended: dict[str, Any] | None = None
    broken: str | None = None
    if args.keep and not args.card:
        kept = Kept(args.keep)
        try:
            extended = _fetch_and_keep(args, kept)
        except Problem as exc:
            broken = str(exc)
        held = kept.of_server(args.server)
        linked = {int(k["extends"]) for k in held if "extends" in k} | ({int(held[-1]["tree_size"])} if held else set())
        unlinked = [k["note"] for k in held if broken or int(k["tree_size"]) not in linked]
        room = max(0, MAX_SUPPLIED_CHECKPOINTS - len(notes))
        notes += [n for n in (unlinked[-room:] if room else []) if n not in notes]
    report = _verify(args, args.card or "", notes)
    fmt = _format(args)
    if fmt == "jsonl" and (extended or broken):
        out = MessageToDict(report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        out["checkpoint_consistency"] = {"problem": broken} if broken else extended
        _emit(json.dumps(out))
    else:
        if extended or broken:
            console = _console(stderr=fmt == "csv")
            if broken:
                console.print(Text.assemble(("✗ checkpoint: ", "bold red"), broken))
            elif extended is not None:
                console.print(_ok(extended["said"]))
        _show_report(report, fmt)
    sys.exit(0 if report.intact and not broken else 1)


def _fetch_and_keep(args: argparse.Namespace, kept: Kept) -> dict[str, Any]:
    """Fetch the latest checkpoint, prove it extends the newest kept one of
    this server (a consistency proof, checked here: O(log n) hashes, no pass
    over the log), then keep it. What was proved; Problem (exit 1) if it
    does not extend it."""
    r = _stub(args).GetCheckpoint(apb.GetCheckpointRequest(), **_call_options(args))
    proved = _extends_kept(args, kept, r)
    count = kept.add(args.server, r, accept_new_key=args.accept_new_key, extends=proved.get("from_size"))
    return {**proved, "kept": count}


def _extends_kept(args: argparse.Namespace, kept: Kept, r) -> dict[str, Any]:
    """That the checkpoint r (its note, key and size vetted first) extends
    the newest kept checkpoint of this server and origin."""
    cp, _ = kept.vet(r, getattr(args, "accept_new_key", False))
    mine = [k for k in kept.of_server(args.server) if k.get("origin") == cp.origin]
    if not mine:
        return {"said": f"checkpoint of tree size {cp.size} is the first kept of {cp.origin}", "to_size": cp.size}
    newest = mine[-1]
    m, old_root = int(newest["tree_size"]), base64.b64decode(newest["root_hash"])
    if cp.size < m:
        raise Problem(
            f"the server's latest checkpoint (tree size {cp.size}) does not extend the kept one of tree size {m}: "
            "the log was cut back, or this server is behind"
        )
    if cp.size == m:
        if old_root != cp.root:
            raise Problem(f"the log of {cp.origin} has forked: tree size {m} had root {newest['root_hash']}, now {r.root_hash}")
        return {"said": f"checkpoint of tree size {m} is the one kept", "from_size": None, "to_size": m}
    try:
        answer = _stub(args).GetConsistencyProof(
            apb.GetConsistencyProofRequest(first_size=m, second_size=cp.size), **_call_options(args)
        )
    except grpc.RpcError as err:
        if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            raise
        raise Problem(
            f"the checkpoint of tree size {cp.size} does not extend the kept one of tree size {m}: "
            f"the server gives no proof ({err.code().name}: {err.details()})"
        ) from None
    if (answer.first_size, answer.second_size) != (m, cp.size):
        raise Problem(
            f"proof for another tree size: asked from {m} to {cp.size}, the server's proof is from "
            f"{answer.first_size} to {answer.second_size}"
        )
    try:
        proofs.verify_consistency(m, cp.size, old_root, cp.root, list(answer.consistency_path))
    except proofs.ProofError as exc:
        raise Problem(f"the checkpoint of tree size {cp.size} does not extend the kept one of tree size {m}: {exc}") from None
    hashes = len(answer.consistency_path)
    return {
        "said": f"checkpoint of tree size {cp.size} extends the kept one of tree size {m}: "
        f"consistency proof of {_n(hashes, 'hash')} checked here (no pass over the log)",
        "from_size": m,
        "to_size": cp.size,
        "proof_hashes": hashes,
    }


@guarded
def checkpoint(args: argparse.Namespace) -> None:
    """The latest signed checkpoint. --compare first (the note kept before
    must still be a prefix of the log; nothing is saved if it is not), then
    --save."""

    fmt = args.format or "table"  # the note itself, on a terminal or not: `> FILE` keeps it
    compared = None
    if args.compare:
        report = _verify(args, "", [_read("--compare", args.compare)])
        supplied = [p for p in report.problems if p.kind == apb.INTEGRITY_PROBLEM_KIND_SUPPLIED_CHECKPOINT]
        if supplied:
            raise Problem(f"the log no longer holds the checkpoint in {args.compare}: {supplied[0].reason}")
        if not report.intact:
            raise Problem(
                f"the log holds the checkpoint in {args.compare}, but {_problem_text(report.first_problem)} "
                "(`pinlife audit verify` for the report)"
            )
        compared = {"file": args.compare, "held": True, "events_checked": report.events_checked}
        if fmt == "table":
            _console(stderr=True).print(_ok(f"the log still holds the checkpoint in {args.compare}"))
    r = _stub(args).GetCheckpoint(apb.GetCheckpointRequest(), **_call_options(args))
    if args.keep:
        proved = _extends_kept(args, Kept(args.keep), r)
        kept = Kept(args.keep).add(args.server, r, accept_new_key=args.accept_new_key, extends=proved.get("from_size"))
        if fmt == "table":
            err = _console(stderr=True)
            if proved.get("from_size"):
                err.print(_ok(proved["said"]))
            err.print(_ok(f"kept in {args.keep} ({_n(kept, 'checkpoint')} of this server)"))
    if args.save:
        try:
            with open(args.save, "w", encoding="utf-8") as f:
                f.write(r.note)
        except OSError as exc:
            fail(f"cannot write --save {args.save}: {exc.strerror}")
    if fmt == "jsonl":
        out = MessageToDict(r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        out |= {"saved": args.save or "", **({"compared": compared} if compared else {})}
        if args.keep and proved.get("from_size"):
            out["extends"] = {k: proved[k] for k in ("from_size", "to_size", "proof_hashes")}
        _emit(json.dumps(out, ensure_ascii=False))
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["origin", "tree_size", "root_hash", "verifier_key", "saved", "compared", "held"])
        w.writerow(
            [r.origin, r.tree_size, r.root_hash, r.verifier_key, args.save or "", args.compare or "", "true" if compared else ""]
        )
    else:
        sys.stdout.write(r.note)
        sys.stdout.flush()
        err = _console(stderr=True)
        err.print(f"verifier key: {r.verifier_key}", style="dim", soft_wrap=True)
        if args.save:
            err.print(_ok(f"saved the checkpoint of tree size {r.tree_size} to {args.save}"))


# -- proofs: a card's events in the kept checkpoint's tree --------------------------------
PROOF_PAGE = 100  # events (each with its proof) a page


def event_problem(e, size: int, root: bytes) -> tuple[str, str] | None:
    """Whether the event e (an AuditEvent with its proof) is, by its proof,
    in the tree of `size` leaves whose root the auditor keeps: None if so,
    else (the kind of problem, why). Checked here, trusting nothing of the
    server but the event and the proof it sent."""
    if not e.HasField("proof"):
        return "no_proof", "the server sent no proof for this event"
    p = e.proof
    if p.tree_size != size:
        return "another_tree_size", f"proof for another tree size: {p.tree_size}, not the kept {size}"
    try:
        position, envelope = proofs.leaf_fields(p.leaf_data)
    except proofs.ProofError as exc:
        return "leaf_not_the_event", str(exc)
    said = (position, envelope.get("card_id"), envelope.get("version"), envelope.get("event_id"), envelope.get("event_type"))
    if said != (e.position, e.stream_id, e.version, e.event_id, e.event_type) or p.leaf_index != e.position - 1:
        return "leaf_not_the_event", "the proof's leaf is not this event (position, stream, version, id or type differ)"
    leaf = proofs.hash_leaf(p.leaf_data)
    if p.leaf_hash and p.leaf_hash != leaf:
        return "tampered_proof", "the leaf hash sent is not the hash of the leaf"
    try:
        proofs.verify_inclusion(e.position - 1, size, leaf, list(p.audit_path), root)
    except proofs.ProofError as exc:
        return "tampered_proof", str(exc)
    return None


@guarded
def prove(args: argparse.Namespace) -> None:
    """Each of the card's events checked here, with its inclusion proof,
    against the newest checkpoint kept of this server (events after it are
    listed as not yet covered)."""
    if not args.keep:
        fail("prove checks against a kept checkpoint: --no-keep leaves none (`pinlife audit checkpoint` keeps one)")
    held = Kept(args.keep).of_server(args.server)
    if not held:
        fail(f"no checkpoint of {args.server} is kept in {args.keep}: `pinlife audit checkpoint` keeps one")
    size, root = int(held[-1]["tree_size"]), base64.b64decode(held[-1]["root_hash"])
    request = apb.GetCardHistoryRequest(card_id=args.card, with_proofs=True, proof_tree_size=size, page_size=PROOF_PAGE)
    rows: list[dict[str, Any]] = []
    call = _stub(args).GetCardHistory
    while True:
        response = call(request, **_call_options(args))
        for e in response.events:
            row = {"position": e.position, "version": e.version, "event_type": e.event_type, "tree_size": size}
            if e.position > size:
                row |= {"result": "after_checkpoint", "reason": f"after the kept checkpoint (tree size {size})"}
            elif response.proof_tree_size != size:
                row |= {"result": "another_tree_size", "reason": f"proofs against tree size {response.proof_tree_size}"}
            elif (problem := event_problem(e, size, root)) is not None:
                row |= {"result": problem[0], "reason": problem[1]}
            else:
                row |= {"result": "included", "reason": ""}
            rows.append(row)
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    bad = [r for r in rows if r["result"] not in ("included", "after_checkpoint")]
    _show_proved(args, rows, bad, size)
    sys.exit(1 if bad else 0)


def _show_proved(args: argparse.Namespace, rows: list[dict[str, Any]], bad: list[dict[str, Any]], size: int) -> None:
    fmt = _format(args)
    if fmt == "jsonl":
        for r in rows:
            _emit(json.dumps(r))
        return
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["position", "version", "event_type", "tree_size", "result", "reason"])
        for r in rows:
            w.writerow([r[k] for k in ("position", "version", "event_type", "tree_size", "result", "reason")])
        return
    console = _console()
    table = Table(header_style="bold cyan", box=box.SIMPLE_HEAD)
    for header in ("pos", "v", "type", "in the tree", "reason"):
        table.add_column(header, overflow="fold")
    marks = {"included": ("✓", "green"), "after_checkpoint": ("·", "dim")}
    for r in rows:
        mark, style = marks.get(r["result"], ("✗ " + r["result"], "bold red"))
        table.add_row(str(r["position"]), str(r["version"]), r["event_type"], Text(mark, style), Text(r["reason"], "dim"))
    console.print(table)
    included = sum(r["result"] == "included" for r in rows)
    after = sum(r["result"] == "after_checkpoint" for r in rows)
    summary = f"{_n(included, 'event')} of card {args.card} proved in the kept checkpoint of tree size {size}, checked here"
    if after:
        summary += f"; {after} after it (`pinlife audit checkpoint` keeps a newer one)"
    if bad:
        console.print(Text.assemble(("✗ ", "bold red"), f"{_n(len(bad), 'event')} not proved: {bad[0]['reason']}; {summary}"))
    else:
        console.print(_ok(summary))


def _ok(message: str):
    return Text.assemble(("✓ ", "bold green"), message)


# -- the auditor's kept checkpoints ---------------------------------------------------
class Kept:
    """The checkpoints an auditor fetched, one JSON object per line (server,
    origin, tree size, root, verifier key, note, when fetched), kept on the
    auditor's machine, out of the operator's reach. Each note is checked
    with the verifier key before it is kept; the first key seen for an
    origin is the one expected after (trust on first use), and two
    checkpoints of one size with different roots are a forked log."""

    def __init__(self, path: str) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = [line for line in f if line.strip()]
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read --keep {self.path}: {getattr(exc, 'strerror', None) or exc}")
        try:
            return [json.loads(line) for line in lines]
        except ValueError as exc:
            fail(f"--keep {self.path} is not JSON Lines: {exc}")

    def of_server(self, server: str) -> list[dict[str, Any]]:
        """This server's kept checkpoints, smallest tree first."""
        return sorted((k for k in self.all() if k.get("server") == server), key=lambda k: int(k["tree_size"]))

    def vet(self, r, accept_new_key: bool = False) -> tuple[Checkpoint, list[dict[str, Any]]]:
        """The GetCheckpoint answer r, parsed, and the kept checkpoints of
        its origin: Problem (exit 1) on a note that does not verify, another
        key for the origin, or a fork (a kept one of its size, another root)."""

        try:
            body, _ = open_note(r.note, [r.verifier_key])
            cp = parse_checkpoint(body)
        except NoteError as exc:
            raise Problem(f"the server's checkpoint does not verify with its own key: {exc}") from None
        mine = [k for k in self.all() if k.get("origin") == cp.origin]
        keys = {k["verifier_key"] for k in mine}
        if keys and r.verifier_key not in keys and not accept_new_key:
            raise Problem(
                f"the checkpoint of {cp.origin} is signed by {r.verifier_key}, not by the key kept in "
                f"{self.path} ({sorted(keys)[0]}); after a key rotation keep it with --accept-new-key"
            )
        for k in mine:
            if int(k["tree_size"]) == cp.size and k["root_hash"] != r.root_hash:
                raise Problem(
                    f"the log of {cp.origin} has forked: tree size {cp.size} had root {k['root_hash']}, now {r.root_hash}"
                )
        return cp, mine

    def add(self, server: str, r, accept_new_key: bool = False, extends: int | None = None) -> int:
        """Keep the GetCheckpoint answer r (unless that size is kept);
        returns how many this server now has. Problem (exit 1) on a note
        that does not verify, another key for the origin, or a fork.
        extends: the kept tree size a consistency proof showed r extends."""
        cp, mine = self.vet(r, accept_new_key)
        if not any(int(k["tree_size"]) == cp.size and k.get("server") == server for k in mine):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            entry = {
                "server": server,
                "origin": cp.origin,
                "tree_size": cp.size,
                "root_hash": r.root_hash,
                "verifier_key": r.verifier_key,
                "note": r.note,
                "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **({"extends": extends} if extends else {}),
            }
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return len(self.of_server(server))


# -- statistics ----------------------------------------------------------------------
def _stats_range(args) -> tuple[datetime, datetime]:
    """The range asked for; by default the last 24 hours (7 days by day),
    ending at the end of the current hour (day) in Asia/Tokyo."""
    day = args.granularity == "day"
    span = timedelta(days=7) if day else timedelta(hours=24)
    if args.end is not None:
        end = args.end
    else:
        now = datetime.now(TOKYO)
        start_of = (
            now.replace(hour=0, minute=0, second=0, microsecond=0) if day else now.replace(minute=0, second=0, microsecond=0)
        )
        end = start_of + (timedelta(days=1) if day else timedelta(hours=1))
    return (args.start if args.start is not None else end - span), end


def _bucket(key: str) -> str:
    try:
        return datetime.fromisoformat(key).astimezone(TOKYO).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return key


@guarded
def stats(args: argparse.Namespace) -> None:
    start, end = _stats_range(args)
    granularity = apb.GRANULARITY_DAY if args.granularity == "day" else apb.GRANULARITY_HOUR
    request = apb.GetStatisticsRequest(granularity=granularity, top_terminals=args.top or 0)
    getattr(request, "from").CopyFrom(_ts(start))
    request.to.CopyFrom(_ts(end))
    s = _stub(args).GetStatistics(request, **_call_options(args))
    fmt = _format(args)
    if fmt == "jsonl":
        out = MessageToDict(s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        _emit(json.dumps({"from": start.isoformat(), "to": end.isoformat(), "granularity": args.granularity, **out}))
        return
    sections = (
        ("channel", s.by_channel),
        ("office", s.by_office),
        ("terminal", s.by_terminal),
        ("pin_type", s.by_pin_type),
        ("time", s.by_time),
    )
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["dimension", "key", *COUNT_NAMES, "distinct_cards"])
        w.writerow(["total", "", *(getattr(s.total, c) for c in COUNT_NAMES), ""])
        for dimension, rows in sections:
            for row in rows:
                w.writerow([dimension, row.key, *(getattr(row.counts, c) for c in COUNT_NAMES), ""])
        for t in s.most_distinct_card_failures:
            only = {"failures": t.failures}
            w.writerow(["distinct_card_failures", t.terminal_id, *(only.get(c, "") for c in COUNT_NAMES), t.distinct_cards])
        return
    _stats_tables(s, start, end, args.granularity)


STATS_DROPPED_FIRST = ("suspensions", "unlocks", "resets", "changes", "throttles", "refusals", "locks")  # on a narrow terminal


def _fitted(console: Console, build: Callable[[list[str]], Table], columns: list[str]) -> tuple[Table, list[str]]:
    """build(columns), less those of STATS_DROPPED_FIRST (in that order)
    that leave the table wider than the terminal; and the ones left out."""
    shown, dropped = list(columns), []
    unbounded = console.options.update_width(10_000)  # a measurement is otherwise cut at the terminal's width
    table = build(shown)
    for name in STATS_DROPPED_FIRST:
        if Measurement.get(console, unbounded, table).maximum <= console.width:  # its natural width: not squeezed
            break
        if name in shown:
            shown.remove(name)
            dropped.append(name)
            table = build(shown)
    return table, dropped


def _stats_tables(s, start: datetime, end: datetime, granularity: str) -> None:
    console = _console()
    left_out: list[str] = []

    def cell(n: int) -> Text:
        return Text(str(n)) if n else Text("·", "dim")

    def table(title: str, first: str, footer: bool = False) -> Table:
        t = Table(
            title=title,
            title_justify="left",
            title_style="bold",
            header_style="bold cyan",
            box=box.SIMPLE_HEAD,
            show_footer=footer,
            footer_style="bold",
        )
        t.add_column(first, footer="total" if footer else "", no_wrap=True)
        return t

    # The counts nothing in the range has are said once, not shown as columns of zeros.
    counted = [c for c in COUNT_NAMES if getattr(s.total, c)] or ["events"]
    none = [c for c in COUNT_NAMES if c not in counted]

    def counts_table(title: str, first: str, rows, total=None) -> Table:
        def build(columns: list[str]) -> Table:
            t = table(title, first, footer=total is not None)
            t.columns[0].min_width = max([len(first), *(len(key) for key, _ in rows)])
            for c in columns:
                t.add_column(
                    c, justify="right", no_wrap=True, min_width=len(c), footer=str(getattr(total, c)) if total is not None else ""
                )
            for key, counts in rows:
                t.add_row(Text(key), *(cell(getattr(counts, c)) for c in columns))
            return t

        t, dropped = _fitted(console, build, counted)
        left_out.extend(d for d in dropped if d not in left_out)
        return t

    span = f"{start.astimezone(TOKYO):%Y-%m-%d %H:%M} → {end.astimezone(TOKYO):%Y-%m-%d %H:%M} (Asia/Tokyo), by {granularity}"
    console.print(Text.assemble(("Statistics ", "bold"), span))
    if none:
        console.print(Text(f"none in the range: {', '.join(none)}", "dim"))
    console.print(counts_table("by channel", "channel", [(r.key, r.counts) for r in s.by_channel], s.total))
    for title, first, rows in (
        ("by office", "office", s.by_office),
        ("by PIN type", "PIN type", s.by_pin_type),
        ("busiest terminals", "terminal", s.by_terminal),
    ):
        if rows:
            console.print(counts_table(title, first, [(r.key, r.counts) for r in rows]))
    if s.by_time:
        peak = max(r.counts.events for r in s.by_time) or 1
        runs = _runs(list(s.by_time))

        def by_time(columns: list[str], bar_width: int = 0) -> Table:
            t = table(f"by {granularity}", "from")
            for c in columns:
                t.add_column(c, justify="right", no_wrap=True, min_width=len(c))
            if bar_width:
                t.add_column("", no_wrap=True, overflow="ellipsis")
            for run in runs:
                if len(run) >= 3 and not run[0].counts.events:  # a quiet stretch: one line
                    quiet = Text(f"{_bucket(run[0].key)} … {_bucket(run[-1].key)}", "dim")
                    note = [Text(f"{len(run)} quiet {granularity}s", "dim")] if bar_width else []
                    t.add_row(quiet, *(cell(0) for _ in columns), *note)
                    continue
                for r in run:
                    bar = Text("█" * max(round(bar_width * r.counts.events / peak), 1 if r.counts.events else 0), "cyan")
                    t.add_row(_bucket(r.key), *(cell(getattr(r.counts, c)) for c in columns), *([bar] if bar_width else []))
            return t

        shown = ["events", *(c for c in ("checks", "failures", "locks", "refusals", "throttles") if c in counted)]
        bare, dropped = _fitted(console, by_time, shown)
        left_out.extend(d for d in dropped if d not in left_out)
        kept = [c for c in shown if c not in dropped]
        unbounded = console.options.update_width(10_000)
        fits = lambda t: Measurement.get(console, unbounded, t).maximum <= console.width  # noqa: E731
        barred = next((t for w in range(20, 3, -1) if fits(t := by_time(kept, w))), bare)  # the bar as wide as fits, up to 20
        console.print(barred)
    if s.most_distinct_card_failures:
        t = table("enumeration: distinct cards failed", "terminal")
        t.add_column("distinct cards", justify="right")
        t.add_column("failures", justify="right")
        for f in s.most_distinct_card_failures:
            t.add_row(f.terminal_id, Text(str(f.distinct_cards), "bold yellow"), str(f.failures))
        console.print(t)
    if note := not_shown(sorted(left_out, key=COUNT_NAMES.index), console.width):
        console.print(Text(note, "dim"))


def _runs(buckets: list) -> list[list]:
    """Consecutive buckets grouped by whether they saw any event."""
    runs: list[list] = []
    for b in buckets:
        if runs and bool(runs[-1][-1].counts.events) == bool(b.counts.events):
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs
