"""What auditors may ask and how the answers are classified (DESIGN.md §3,
§6): the filter of a query and its validation, the bound on pages, the
cursor of a page, what each event type counts as in the statistics, and
which outcome it stands for. Pure: the store turns a `Filter` into SQL
(service/store/audit_reads.py), the API turns protos into one
(service/api/audit_mapping.py).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .access import Role
from .calendar import TOKYO
from .errors import FieldViolation, InvalidInput, OutOfRange
from .events import EVENT_TYPES
from .pins import PinType

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_HOUR_BUCKETS_DAYS = 31
MAX_DAY_BUCKETS_DAYS = 366
DEFAULT_TOP_TERMINALS = 20
MAX_TOP_TERMINALS = 1000
MAX_SUPPLIED_CHECKPOINTS = 16  # checkpoints an auditor may supply to one integrity check
MAX_FILTER_VALUES = 50  # values in one list of a filter, as sent (repeats count: service/api/audit_mapping.py)
MAX_PROOF_PAGE_SIZE = 100  # events of a history page with their inclusion proofs
MAX_POSITION = 2**63 - 1  # positions and versions are stored as 64-bit signed integers
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # the times an auditor may ask about: [EARLIEST, LATEST)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class Seal(Protocol):
    """Authenticates what the service hands out and takes back (page
    tokens): service/keys/ring.py's IntegrityKeys is one."""

    def tag(self, message: bytes) -> str: ...

    def checks(self, tagged: str | None, message: bytes) -> bool: ...


def validate_position(value: int, field_name: str) -> int:
    if not 0 <= value <= MAX_POSITION:
        raise InvalidInput(FieldViolation(field_name, f"must be 0 to {MAX_POSITION}"))
    return value


def check_tree_size(field_name: str, size: int, latest: int, signed: bool) -> None:
    """A proof is asked for against trees the server signed (a checkpoint of
    that size); `latest` is the size of its latest checkpoint (0: none)."""
    if not 1 <= size <= MAX_POSITION:
        raise InvalidInput(FieldViolation(field_name, f"must be the tree size of a signed checkpoint, 1 to {MAX_POSITION}"))
    if size > latest:
        past = f"the latest signed checkpoint has tree size {latest}" if latest else "no checkpoint has been signed yet"
        raise OutOfRange(FieldViolation(field_name, f"{size} is past the log's signed checkpoints: {past}"))
    if not signed:
        raise InvalidInput(
            FieldViolation(field_name, f"no checkpoint of tree size {size} was signed (GetCheckpoint, or a kept one)")
        )


def check_proof_position(position: int, tree_size: int) -> None:
    """The event an inclusion proof is asked for: positions 1..tree_size are in the tree."""
    if not 1 <= position <= MAX_POSITION:
        raise InvalidInput(FieldViolation("position", f"must be 1 to {MAX_POSITION}"))
    if position > tree_size:
        raise OutOfRange(FieldViolation("position", f"{position} is past the tree of size {tree_size}"))


def check_consistency_sizes(first: int, second: int) -> None:
    if first > second:
        raise InvalidInput(FieldViolation("first_size", f"must be at most second_size ({second})"))


def _out_of_range(at: datetime | None, field_name: str) -> list[FieldViolation]:
    """A time an auditor asks about is in [EARLIEST, LATEST) (None: not asked)."""
    if at is None or EARLIEST <= at < LATEST:
        return []
    return [FieldViolation(field_name, f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)")]


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    LOCKED = "locked"
    REFUSED = "refused"
    OTHER = "other"


# What each event type says happened (filters and the API's `outcome`).
OUTCOMES: dict[str, Outcome] = {
    "CardEnrolled": Outcome.SUCCESS,
    "PinVerified": Outcome.SUCCESS,
    "PinChanged": Outcome.SUCCESS,
    "PinReset": Outcome.SUCCESS,
    "PinUnlocked": Outcome.SUCCESS,
    "CardResumed": Outcome.SUCCESS,
    "PinVerificationFailed": Outcome.FAILURE,
    "ProxyInquiryCodeRejected": Outcome.FAILURE,
    "PinLocked": Outcome.LOCKED,
    "LockedPinAttempted": Outcome.LOCKED,
    "SuspendedCardAttempted": Outcome.LOCKED,
    "AccessDenied": Outcome.REFUSED,
    "CounterOutOfService": Outcome.REFUSED,
    "CounterProcedureRefused": Outcome.REFUSED,
    "ResetRefused": Outcome.REFUSED,
    "TerminalThrottled": Outcome.REFUSED,
    "SuspensionRefused": Outcome.REFUSED,
    "CardSuspended": Outcome.OTHER,
    "ProxyInquiryIssued": Outcome.OTHER,
    "ProxyInquiryClosed": Outcome.OTHER,
    "StoreResetReserved": Outcome.OTHER,
    "AuditRead": Outcome.OTHER,
    "RepeatsCounted": Outcome.OTHER,  # repeats of any aggregated type (its payload's event_type says which)
}
assert OUTCOMES.keys() == EVENT_TYPES.keys(), "every event type has an outcome"

# The statistics' counters each event type adds to (every event adds to "events").
COUNTED_AS: dict[str, tuple[str, ...]] = {
    "PinVerified": ("checks",),
    "PinVerificationFailed": ("checks", "failures"),
    "LockedPinAttempted": ("checks",),
    "SuspendedCardAttempted": ("checks",),
    "PinLocked": ("locks",),
    "PinReset": ("resets",),
    "PinUnlocked": ("unlocks",),
    "PinChanged": ("changes",),
    # an aggregated event adds its payload's "repeated" too, as does a
    # RepeatsCounted to its event_type's counters (service/domain/repeats.py)
    "AccessDenied": ("refusals",),
    "CounterOutOfService": ("refusals",),
    "CounterProcedureRefused": ("refusals",),
    "ResetRefused": ("refusals",),
    "TerminalThrottled": ("throttles",),
    "SuspensionRefused": ("refusals",),
    "CardSuspended": ("suspensions",),
}
COUNT_NAMES = ("checks", "failures", "locks", "resets", "unlocks", "changes", "refusals", "throttles", "suspensions", "events")


def outcome_of(event_type: str) -> Outcome:
    return OUTCOMES.get(event_type, Outcome.OTHER)


class Order(enum.Enum):
    OLDEST_FIRST = "oldest_first"
    NEWEST_FIRST = "newest_first"


class Granularity(enum.Enum):
    HOUR = "hour"
    DAY = "day"


@dataclass(frozen=True)
class Filter:
    """Which events: every field that is set narrows the selection."""

    start: datetime | None = None  # occurred_at >= start
    end: datetime | None = None  # occurred_at < end
    event_types: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    terminal_id: str | None = None
    office: str | None = None
    pin_type: PinType | None = None
    outcomes: frozenset[Outcome] = frozenset()
    stream_kind: str | None = None  # "card" | "terminal"

    def types(self) -> frozenset[str] | None:
        """The event types the filter admits (event types and outcomes
        together), or None for all."""
        if not self.event_types and not self.outcomes:
            return None
        types = self.event_types or frozenset(EVENT_TYPES)
        if self.outcomes:
            types = frozenset(t for t in types if OUTCOMES[t] in self.outcomes)
        return types

    def as_dict(self) -> dict[str, Any]:
        """A stable, JSON-ready form (recorded with the audit read; the cursor's digest)."""
        out: dict[str, Any] = {}
        if self.start:
            out["from"] = self.start.isoformat()
        if self.end:
            out["to"] = self.end.isoformat()
        for name in ("event_types", "channels"):
            if values := getattr(self, name):
                out[name] = sorted(values)
        if self.outcomes:
            out["outcomes"] = sorted(o.value for o in self.outcomes)
        for name in ("terminal_id", "office", "stream_kind"):
            if value := getattr(self, name):
                out[name] = value
        if self.pin_type:
            out["pin_type"] = self.pin_type.value
        return out


CHANNELS = frozenset(r.value for r in Role)


def validate_filter(f: Filter, prefix: str = "filter") -> Filter:
    problems = [*_out_of_range(f.start, f"{prefix}.from"), *_out_of_range(f.end, f"{prefix}.to")]
    if f.start and f.end and f.start >= f.end:
        problems.append(FieldViolation(f"{prefix}.to", "must be after filter.from (the range is [from, to))"))
    for name, values, known in (("event_types", f.event_types, EVENT_TYPES.keys()), ("channels", f.channels, CHANNELS)):
        if len(values) > MAX_FILTER_VALUES:
            problems.append(FieldViolation(f"{prefix}.{name}", f"at most {MAX_FILTER_VALUES} values"))
        elif unknown := sorted(values - set(known)):
            problems.append(
                FieldViolation(f"{prefix}.{name}", f"unknown: {', '.join(unknown[:5])}; known: {', '.join(sorted(known))}")
            )
    for name in ("terminal_id", "office"):
        value = getattr(f, name)
        if value is not None and (len(value) > 64 or not value.isprintable()):
            problems.append(FieldViolation(f"{prefix}.{name}", "must be at most 64 printable characters"))
    if problems:
        raise InvalidInput(problems)
    return f


def page_size(requested: int, field_name: str = "page_size") -> int:
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidInput(FieldViolation(field_name, f"must be 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"))
    return requested


# -- cursors: opaque to clients, bound to the query they page through ----------
@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this key, in the query's order."""

    key: tuple[Any, ...]  # (version,) for a card's history; (occurred_at ISO, position) for queries


def _digest(query: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _sealed(body: dict[str, Any]) -> bytes:
    return json.dumps({k: body[k] for k in ("v", "k", "q")}, sort_keys=True, separators=(",", ":")).encode()


def encode_cursor(cursor: Cursor, query: dict[str, Any], seal: Seal) -> str:
    """A page token: the cursor and the query's digest, sealed (a token
    edited or made up by a client is refused, not followed)."""
    body: dict[str, Any] = {"v": 2, "k": list(cursor.key), "q": _digest(query)}
    body["m"] = seal.tag(_sealed(body))
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(
    token: str, query: dict[str, Any], shape: tuple[type, ...], seal: Seal, field_name: str = "page_token"
) -> Cursor | None:
    """None for the first page. A token that is not ours (its seal does not
    check), or was made for another query (filter, order, card), is
    INVALID_ARGUMENT. shape: the key's types (a datetime travels as ISO 8601
    text)."""
    if not token:
        return None
    try:
        if len(token) > 512:
            raise ValueError("too long")
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if body["v"] != 2 or not isinstance(body["k"], list) or not isinstance(body["q"], str):
            raise ValueError("shape")
        if not isinstance(body.get("m"), str) or not seal.checks(body["m"], _sealed(body)):
            raise ValueError("not sealed by this service")
        key = tuple(_key_part(v, t) for v, t in zip(body["k"], shape, strict=True))
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(FieldViolation(field_name, "is not a page token this service issued")) from None
    if body["q"] != _digest(query):
        raise InvalidInput(FieldViolation(field_name, "was issued for another query: pass the same filter and order"))
    return Cursor(key)


def _key_part(value: Any, kind: type) -> Any:
    if kind is datetime:
        at = datetime.fromisoformat(value)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at
    if kind is int and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_POSITION):
        raise ValueError("not a position")
    return value


# -- statistics ---------------------------------------------------------------
@dataclass
class Counts:
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0))

    def add(self, event_type: str, n: int, aggregated_refusals: int = 0) -> None:
        self.values["events"] += n
        for counter in COUNTED_AS.get(event_type, ()):
            self.values[counter] += n
        self.values["refusals"] += aggregated_refusals


def validate_statistics_range(
    start: datetime | None, end: datetime | None, granularity: Granularity
) -> tuple[datetime, datetime]:
    problems = []
    if start is None:
        problems.append(FieldViolation("from", "is required"))
    if end is None:
        problems.append(FieldViolation("to", "is required"))
    if start and end:
        if start >= end:
            problems.append(FieldViolation("to", "must be after from (the range is [from, to))"))
        limit = MAX_HOUR_BUCKETS_DAYS if granularity is Granularity.HOUR else MAX_DAY_BUCKETS_DAYS
        problems += [*_out_of_range(start, "from"), *_out_of_range(end, "to")]
        if end - start > timedelta(days=limit):
            problems.append(FieldViolation("to", f"the range is at most {limit} days by {granularity.value}"))
    if problems:
        raise InvalidInput(problems)
    return start, end  # type: ignore[return-value]


def top_terminals(requested: int) -> int:
    if requested == 0:
        return DEFAULT_TOP_TERMINALS
    if requested > MAX_TOP_TERMINALS:
        raise InvalidInput(FieldViolation("top_terminals", f"must be at most {MAX_TOP_TERMINALS}"))
    return requested


def bucket_start(at: datetime, granularity: Granularity) -> datetime:
    """The start of the hour or day (Asia/Tokyo) holding `at`."""
    local = at.astimezone(TOKYO)
    if granularity is Granularity.DAY:
        return local.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.replace(minute=0, second=0, microsecond=0)


def buckets(start: datetime, end: datetime, granularity: Granularity) -> list[datetime]:
    """Every bucket start of [start, end), oldest first."""
    step = timedelta(days=1) if granularity is Granularity.DAY else timedelta(hours=1)
    out, at = [], bucket_start(start, granularity)
    while at < end:
        out.append(at)
        at += step
    return out


@dataclass
class Statistics:
    total: Counts = field(default_factory=Counts)
    by_channel: dict[str, Counts] = field(default_factory=dict)
    by_office: dict[str, Counts] = field(default_factory=dict)
    by_terminal: dict[str, Counts] = field(default_factory=dict)
    by_pin_type: dict[str, Counts] = field(default_factory=dict)
    by_time: dict[datetime, Counts] = field(default_factory=dict)
    by_time_channel: dict[tuple[datetime, str], Counts] = field(default_factory=dict)  # (bucket, channel)
    distinct_card_failures: list[tuple[str, int, int]] = field(default_factory=list)  # terminal, cards, failures
