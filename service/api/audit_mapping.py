"""AuditService protos <-> the audit's domain values: filters in; events
(typed payloads), statistics and integrity reports out."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from ..domain.audit import MAX_FILTER_VALUES, Counts, Filter, Granularity, Order, Outcome, Statistics, outcome_of
from ..domain.errors import FieldViolation, InvalidInput
from ..domain.events import EVENT_TYPES
from ..domain.integrity import Report
from ..domain.log import LoggedEvent
from ..domain.merkle import LeafProof
from ..domain.pins import PinType
from ..v1 import audit_service_pb2 as apb
from . import mapping

OUTCOME_TO_DOMAIN = {
    apb.EVENT_OUTCOME_SUCCESS: Outcome.SUCCESS,
    apb.EVENT_OUTCOME_FAILURE: Outcome.FAILURE,
    apb.EVENT_OUTCOME_LOCKED: Outcome.LOCKED,
    apb.EVENT_OUTCOME_REFUSED: Outcome.REFUSED,
    apb.EVENT_OUTCOME_OTHER: Outcome.OTHER,
}
OUTCOME_TO_PROTO = {v: k for k, v in OUTCOME_TO_DOMAIN.items()}
ORDER_TO_DOMAIN = {
    apb.ORDER_UNSPECIFIED: Order.OLDEST_FIRST,
    apb.ORDER_OLDEST_FIRST: Order.OLDEST_FIRST,
    apb.ORDER_NEWEST_FIRST: Order.NEWEST_FIRST,
}
GRANULARITY_TO_DOMAIN = {
    apb.GRANULARITY_UNSPECIFIED: Granularity.HOUR,
    apb.GRANULARITY_HOUR: Granularity.HOUR,
    apb.GRANULARITY_DAY: Granularity.DAY,
}
STREAM_KIND_TO_DOMAIN = {apb.STREAM_KIND_UNSPECIFIED: None, apb.STREAM_KIND_CARD: "card", apb.STREAM_KIND_TERMINAL: "terminal"}
STREAM_KIND_TO_PROTO = {"card": apb.STREAM_KIND_CARD, "terminal": apb.STREAM_KIND_TERMINAL}
PIN_TYPE_BY_VALUE = {t.value: t for t in PinType}


def _known(table: dict, value: int, field: str) -> Any:
    if value not in table:
        raise InvalidInput(FieldViolation(field, f"unknown value {value}"))
    return table[value]


def order(value: int) -> Order:
    return _known(ORDER_TO_DOMAIN, value, "order")


def granularity(value: int) -> Granularity:
    return _known(GRANULARITY_TO_DOMAIN, value, "granularity")


def time(ts: Timestamp, present: bool, field_name: str) -> datetime | None:
    """A Timestamp the client set, or None; one protobuf itself would not
    accept (seconds or nanos out of range) is bad input naming the field."""
    if not present:
        return None
    try:
        if not 0 <= ts.nanos <= 999_999_999:
            raise ValueError("nanos")
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidInput(FieldViolation(field_name, "is not a valid time (seconds or nanos out of range)")) from None


FILTER_LISTS = ("event_types", "channels", "outcomes")


def event_filter(f: apb.EventFilter, stream_kind: int = apb.STREAM_KIND_UNSPECIFIED, prefix: str = "filter") -> Filter:
    # Each list is bounded as sent, repeats included (the Filter keeps its values once each).
    if too_long := [
        FieldViolation(f"{prefix}.{name}", f"at most {MAX_FILTER_VALUES} values (sent: {len(getattr(f, name))}, repeats count)")
        for name in FILTER_LISTS
        if len(getattr(f, name)) > MAX_FILTER_VALUES
    ]:
        raise InvalidInput(too_long)
    outcomes = frozenset(_known(OUTCOME_TO_DOMAIN, o, f"{prefix}.outcomes") for o in f.outcomes)
    pin_type = None
    if f.pin_type:
        try:
            pin_type = mapping.optional_pin_type(f.pin_type)
        except InvalidInput:
            raise InvalidInput(FieldViolation(f"{prefix}.pin_type", f"unknown value {f.pin_type}")) from None
    return Filter(
        start=time(getattr(f, "from"), f.HasField("from"), f"{prefix}.from"),
        end=time(f.to, f.HasField("to"), f"{prefix}.to"),
        event_types=frozenset(f.event_types),
        channels=frozenset(f.channels),
        terminal_id=f.terminal_id or None,
        office=f.office_id or None,
        pin_type=pin_type,
        outcomes=outcomes,
        stream_kind=_known(STREAM_KIND_TO_DOMAIN, stream_kind, "stream_kind"),
    )


MAX_EVENTS_PER_MESSAGE = 500


def events_per_message(asked: int) -> int:
    """WatchEvents' max_events_per_message: 0 or 1 is one event per message."""
    if asked > MAX_EVENTS_PER_MESSAGE:
        raise InvalidInput(FieldViolation("max_events_per_message", f"at most {MAX_EVENTS_PER_MESSAGE}"))
    return max(1, asked)


# -- events --------------------------------------------------------------------
def _oneof_name(event_type: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower()


PAYLOAD_FIELDS = {f.name for f in apb.EventPayload.DESCRIPTOR.oneofs_by_name["kind"].fields}
assert all(_oneof_name(t) in PAYLOAD_FIELDS for t in EVENT_TYPES), "every event type has a typed payload"


def _repeated(fd: FieldDescriptor) -> bool:
    is_repeated = getattr(fd, "is_repeated", None)  # protobuf >= 5.29; `label` before (gone from newer runtimes and stubs)
    return bool(is_repeated) if is_repeated is not None else getattr(fd, "label", None) == FieldDescriptor.LABEL_REPEATED


def _typed(message: Any, payload: dict[str, Any]) -> None:
    """Fill a payload message from the (current-shape) payload, by field
    name: PIN types become the enum, ISO times Timestamps."""
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in payload or payload[fd.name] is None:
            continue
        value = payload[fd.name]
        if fd.message_type is not None and fd.message_type.full_name == "google.protobuf.Timestamp":
            getattr(message, fd.name).FromDatetime(datetime.fromisoformat(value).astimezone(UTC))
        elif fd.enum_type is not None and fd.enum_type.name == "PinType":
            values = value if isinstance(value, list) else [value]
            converted = [mapping.PIN_TYPE_TO_PROTO[PIN_TYPE_BY_VALUE[v]] for v in values]
            if _repeated(fd):
                getattr(message, fd.name).extend(converted)
            else:
                setattr(message, fd.name, converted[0])
        elif _repeated(fd):
            getattr(message, fd.name).extend(value)
        else:
            setattr(message, fd.name, value)


MAX_SHOWN_PAYLOAD = 64 * 1024  # bytes of JSON: a larger stored payload is named, not shown


def event(e: LoggedEvent) -> apb.AuditEvent:
    """The event as auditors see it. A row someone inserted behind the
    service's back (a field out of range, an unknown PIN type, a payload too
    large to show) is shown as far as it can be, never an internal error."""
    try:
        return _event(e)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        out = apb.AuditEvent(event_type=str(e.event_type)[:64], stream_id=str(e.stream_id)[:200])
        if isinstance(e.position, int) and 0 <= e.position < 2**64:
            out.position = e.position
        out.payload.json.update({"unreadable": f"{type(exc).__name__}: {exc}"[:500]})
        return out


def _event(e: LoggedEvent) -> apb.AuditEvent:
    payload, schema_version = e.current_payload(), e.current_schema_version  # as stored when it cannot be read
    size = len(json.dumps(payload, default=str))
    if size > MAX_SHOWN_PAYLOAD:
        payload = {"oversized_payload_bytes": size}
    out = apb.AuditEvent(
        position=e.position,
        stream_id=e.stream_id,
        stream_kind=STREAM_KIND_TO_PROTO.get(e.stream_kind, apb.STREAM_KIND_UNSPECIFIED),
        version=e.version,
        event_id=e.event_id,
        event_type=e.event_type,
        schema_version=schema_version,
        stored_schema_version=e.schema_version,
        occurred_at=mapping.timestamp(e.occurred_at),
        channel=e.channel,
        terminal_id=e.terminal_id,
        office_id=e.office or "",
        request_id=e.request_id,
        hash=e.hash,
        prev_hash=e.prev_hash,
        key_id=e.key_id or "",
        outcome=OUTCOME_TO_PROTO[outcome_of(e.event_type)],
    )
    if e.pin_type:
        out.pin_type = mapping.PIN_TYPE_TO_PROTO[PIN_TYPE_BY_VALUE[e.pin_type]]
    name = _oneof_name(e.event_type)
    if name in PAYLOAD_FIELDS and e.event is not None and size <= MAX_SHOWN_PAYLOAD:
        _typed(getattr(out.payload, name), payload)
        getattr(out.payload, name).SetInParent()
    try:
        out.payload.json.update(payload if isinstance(payload, dict) else {"stored": payload})
    except (ValueError, TypeError, OverflowError):  # a stored payload JSON cannot hold as a Struct: shown as its text
        out.payload.json.Clear()
        out.payload.json.update({"stored": str(payload)})
    return out


# -- statistics --------------------------------------------------------------------
def counts(c: Counts) -> apb.Counts:
    return apb.Counts(**c.values)


def counts_by(table: dict) -> list[apb.CountsBy]:
    return [apb.CountsBy(key=str(k), counts=counts(v)) for k, v in table.items()]


def statistics(stats: Statistics) -> apb.GetStatisticsResponse:
    by_terminal = sorted(stats.by_terminal.items(), key=lambda kv: (-kv[1].values["events"], kv[0]))
    channels_at: dict[datetime, dict[str, Counts]] = {}
    for (at, channel), n in sorted(stats.by_time_channel.items()):
        channels_at.setdefault(at, {})[channel] = n
    return apb.GetStatisticsResponse(
        total=counts(stats.total),
        by_channel=counts_by(dict(sorted(stats.by_channel.items()))),
        by_office=counts_by(dict(sorted(stats.by_office.items()))),
        by_terminal=counts_by(dict(by_terminal)),
        by_pin_type=counts_by(dict(sorted(stats.by_pin_type.items()))),
        by_time=[
            apb.CountsBy(
                key=b.isoformat(),
                counts=counts(c),
                by_channel=counts_by(channels_at.get(b, {})),
            )
            for b, c in stats.by_time.items()
        ],
        most_distinct_card_failures=[
            apb.TerminalFailures(terminal_id=t, distinct_cards=d, failures=n) for t, d, n in stats.distinct_card_failures
        ],
    )


# -- integrity ------------------------------------------------------------------------
def integrity_report(r: Report) -> apb.IntegrityReport:
    problems: list[apb.IntegrityProblem] = []
    if b := r.first_broken_link:
        problems.append(
            apb.IntegrityProblem(
                kind=apb.INTEGRITY_PROBLEM_KIND_BROKEN_LINK,
                stream_id=b.stream_id,
                version=b.version,
                position=b.position,
                reason=b.reason,
            )
        )
    if r.cards_failing_mac_count:
        problems.append(
            apb.IntegrityProblem(
                kind=apb.INTEGRITY_PROBLEM_KIND_MAC,
                stream_id=r.cards_failing_mac[0],
                reason=f"{r.cards_failing_mac_count} card(s) fail their MAC (changed outside the service): "
                + ", ".join(r.cards_failing_mac),
            )
        )
    if r.terminals_failing_mac_count:
        problems.append(
            apb.IntegrityProblem(
                kind=apb.INTEGRITY_PROBLEM_KIND_TERMINAL_MAC,
                stream_id=r.terminals_failing_mac[0],
                reason=f"{r.terminals_failing_mac_count} terminal(s) fail their MAC (throttle state changed outside "
                "the service; refused until resolved): " + ", ".join(r.terminals_failing_mac),
            )
        )
    if r.projection_mismatch_count:
        problems.append(
            apb.IntegrityProblem(
                kind=apb.INTEGRITY_PROBLEM_KIND_PROJECTION,
                stream_id=r.projection_mismatches[0],
                reason=f"{r.projection_mismatch_count} card(s) differ from a rebuild from their events: "
                + ", ".join(r.projection_mismatches),
            )
        )
    if u := r.first_unlawful:
        problems.append(
            apb.IntegrityProblem(
                kind=apb.INTEGRITY_PROBLEM_KIND_UNLAWFUL,
                stream_id=u["stream_id"],
                version=u["version"],
                reason=f"{u['event_type']}: {u['reason']}",
            )
        )
    if x := r.first_unreadable:
        problems.append(
            apb.IntegrityProblem(
                kind=apb.INTEGRITY_PROBLEM_KIND_UNREADABLE_EVENT,
                stream_id=x["stream_id"],
                version=x["version"],
                position=x["position"],
                reason=f"{r.unreadable_count} stored event(s) cannot be read; the first, {x['event_type']}: {x['reason']}",
            )
        )
    for kind, p in (
        (apb.INTEGRITY_PROBLEM_KIND_STORED_CHECKPOINT, r.checkpoint_problem),
        (apb.INTEGRITY_PROBLEM_KIND_SUPPLIED_CHECKPOINT, r.supplied_checkpoint_problem),
    ):
        if p:
            problems.append(apb.IntegrityProblem(kind=kind, position=p["tree_size"], reason=p["reason"]))
    out = apb.IntegrityReport(
        intact=r.intact,
        problems=problems,
        events_checked=r.events,
        cards_checked=r.cards,
        head_position=r.head_position,
        checkpoints_checked=r.stored_checkpoints + r.supplied_checkpoints,
    )
    if problems:
        out.first_problem.CopyFrom(problems[0])
    return out


# -- proofs --------------------------------------------------------------------
def leaf_proof(p: LeafProof) -> apb.LeafProof:
    return apb.LeafProof(
        leaf_data=p.leaf_data,
        leaf_hash=p.proof.leaf_hash,
        leaf_index=p.proof.leaf_index,
        tree_size=p.proof.tree_size,
        audit_path=list(p.proof.path),
    )
