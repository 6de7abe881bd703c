"""The auditors' reads (AuditService), on the read engine: a card's history
by stream version, queries across streams as keyset pages in
(occurred_at, position) order, and the statistics' GROUP BY queries.

Each query's leading conditions match an index of service/store/tables.py
(one terminal's day: terminal_id, occurred_at, position; one event type's
hour: event_type, ...; one office's day: office, ...; otherwise the
occurred_at range), so a page is an ordered index range read that stops
after page_size rows; tests/store/test_audit_reads.py shows the plans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, literal_column, select, tuple_

from ..domain.audit import COUNTED_AS, Counts, Filter, Granularity, Order, Statistics, bucket_start, buckets
from ..domain.calendar import TOKYO
from ..domain.errors import PreconditionFailed, PreconditionViolation
from ..domain.integrity import Progress, Report
from ..domain.lawful import CLOCK_TOLERANCE
from ..domain.log import LoggedEvent
from ..domain.merkle import InclusionProof, LeafProof
from ..domain.repeats import AGGREGATED
from ..keys.ring import KeyRing
from . import checkpoints
from .check import check_card
from .check_process import check_store_in_process
from .event_store import EventStore
from .records import logged_event, utc
from .tables import cards, events
from .tree import NodesMissing, TreeReader


def _where(q: Select, f: Filter) -> Select:
    c = events.c
    if f.start is not None:
        q = q.where(c.occurred_at >= utc(f.start))
    if f.end is not None:
        q = q.where(c.occurred_at < utc(f.end))
    if (types := f.types()) is not None:
        q = q.where(c.event_type.in_(sorted(types)))
    if f.channels:
        q = q.where(c.channel.in_(sorted(f.channels)))
    if f.terminal_id is not None:
        q = q.where(c.terminal_id == f.terminal_id)
    if f.office is not None:
        q = q.where(c.office == f.office)
    if f.pin_type is not None:
        q = q.where(c.pin_type == f.pin_type.value)
    if f.stream_kind is not None:
        q = q.where(c.stream_kind == f.stream_kind)
    return q


def card_version(store: EventStore, card_id: str) -> int | None:
    with store.reader.begin() as conn:
        return conn.execute(select(cards.c.version).where(cards.c.card_id == card_id)).scalar_one_or_none()


def card_history(
    store: EventStore, card_id: str, f: Filter, order: Order, after_version: int | None, limit: int
) -> list[LoggedEvent]:
    """Up to `limit` events of the card's stream after `after_version` in
    the given order (the stream's (stream_id, version) index)."""
    c = events.c
    q = _where(select(events).where(c.stream_id == card_id), f)
    newest = order is Order.NEWEST_FIRST
    if after_version is not None:
        q = q.where(c.version < after_version if newest else c.version > after_version)
    q = q.order_by(c.version.desc() if newest else c.version).limit(limit)
    with store.reader.begin() as conn:
        return [logged_event(r) for r in conn.execute(q)]


def query_events(store: EventStore, f: Filter, order: Order, after: tuple[datetime, int] | None, limit: int) -> list[LoggedEvent]:
    """Up to `limit` events matching the filter after the keyset `after`
    ((occurred_at, position) of the last event of the previous page)."""
    c = events.c
    q = _where(select(events), f)
    newest = order is Order.NEWEST_FIRST
    if after is not None:
        at = bindparam("after_at", utc(after[0]), type_=c.occurred_at.type)
        pos = bindparam("after_position", after[1], type_=c.position.type)
        key = tuple_(c.occurred_at, c.position)
        q = q.where(key < tuple_(at, pos) if newest else key > tuple_(at, pos))
        q = q.where(c.occurred_at <= at if newest else c.occurred_at >= at)  # a plain range for every planner
    q = q.order_by(*((c.occurred_at.desc(), c.position.desc()) if newest else (c.occurred_at, c.position))).limit(limit)
    with store.reader.begin() as conn:
        return [logged_event(r) for r in conn.execute(q)]


def query_plan(store: EventStore, f: Filter, order: Order = Order.OLDEST_FIRST, limit: int = 100) -> str:
    """The database's plan of a query's first page (tests and the benchmark show it)."""
    c = events.c
    q = _where(select(events), f).order_by(c.occurred_at, c.position).limit(limit)
    compiled = q.compile(store.reader, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN " if store.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    with store.reader.begin() as conn:
        rows = conn.exec_driver_sql(prefix + str(compiled)).all()
    return "\n".join(str(r[0]) if store.dialect == "postgresql" else str(r[-1]) for r in rows)


# -- statistics ------------------------------------------------------------------
def _bucket_sql(store: EventStore, granularity: Granularity):
    """The start of the event's hour or day in Asia/Tokyo (Japan keeps no
    daylight saving time: a fixed +9 hours on SQLite)."""
    if store.dialect == "postgresql":
        unit = "day" if granularity is Granularity.DAY else "hour"
        return literal_column(f"date_trunc('{unit}', events.occurred_at AT TIME ZONE 'Asia/Tokyo')")
    fmt = "%Y-%m-%d 00:00:00" if granularity is Granularity.DAY else "%Y-%m-%d %H:00:00"
    return func.strftime(fmt, events.c.occurred_at, "+9 hours")


def _aggregated_refusals(store: EventStore):
    if store.dialect == "postgresql":
        return literal_column("(events.payload->>'repeated')::bigint")
    return func.json_extract(events.c.payload, "$.repeated")


def _reported_type(store: EventStore):
    """A RepeatsCounted's event_type (the type whose repeats it reports)."""
    if store.dialect == "postgresql":
        return literal_column("(events.payload->>'event_type')")
    return func.json_extract(events.c.payload, "$.event_type")


# Events whose payload counts repeats not recorded on their own (service/domain/repeats.py, AccessDenied).
_COUNTING: tuple[str, ...] = ("AccessDenied", *(t.type_name for t in AGGREGATED), "RepeatsCounted")


def statistics(store: EventStore, start: datetime, end: datetime, granularity: Granularity, top: int) -> Statistics:
    c = events.c
    stats = Statistics()
    in_range = and_(c.occurred_at >= utc(start), c.occurred_at < utc(end))

    def grouped(key, into: dict, convert: Callable = lambda k: k, where=None) -> None:
        q = select(key, c.event_type, func.count()).where(in_range)
        if where is not None:
            q = q.where(where)
        for k, event_type, n in conn.execute(q.group_by(key, c.event_type)):
            into.setdefault(convert(k), Counts()).add(event_type, n)

    def local(k) -> datetime:
        if isinstance(k, str):
            k = datetime.fromisoformat(k)
        return k.replace(tzinfo=TOKYO)

    with store.reader.begin() as conn:
        # One grouping by bucket, channel and type gives the totals, each
        # channel, each bucket and each bucket by channel.
        # (rows typed as plain tuples: mypy unpacks SQLAlchemy 2.1's Row[*tuple[Any, ...]] to object)
        bucket = _bucket_sql(store, granularity)
        by_time_channel: Iterable[tuple[Any, ...]] = conn.execute(
            select(bucket, c.channel, c.event_type, func.count()).where(in_range).group_by(bucket, c.channel, c.event_type)
        )
        for b, channel, event_type, n in by_time_channel:
            at = local(b)
            for into in (
                stats.total,
                stats.by_channel.setdefault(channel, Counts()),
                stats.by_time.setdefault(at, Counts()),
                stats.by_time_channel.setdefault((at, channel), Counts()),
            ):
                into.add(event_type, n)
        grouped(c.office, stats.by_office, where=c.office.isnot(None))
        grouped(c.pin_type, stats.by_pin_type, where=c.pin_type.isnot(None))
        busiest = select(c.terminal_id).where(in_range).group_by(c.terminal_id)
        busiest = busiest.order_by(func.count().desc(), c.terminal_id).limit(top)
        terminals = [t for (t,) in conn.execute(busiest)]
        if terminals:
            grouped(c.terminal_id, stats.by_terminal, where=c.terminal_id.in_(terminals))
        # Aggregated events count repeats not recorded on their own: add them to
        # their type's counters (at most one event per terminal, key and window).
        repeated = _aggregated_refusals(store)
        q = select(c.event_type, _reported_type(store), c.channel, c.office, c.terminal_id, c.pin_type, bucket)
        q = q.add_columns(repeated).where(in_range, c.event_type.in_(_COUNTING))
        counted: Iterable[tuple[Any, ...]] = conn.execute(q)
        for event_type, reported, channel, office, terminal, pin_type, b, n in counted:
            names = COUNTED_AS.get(reported if event_type == "RepeatsCounted" else event_type, ())
            if n and names:
                at = local(b)
                for counts in (
                    stats.total,
                    stats.by_channel.get(channel),
                    stats.by_office.get(office),
                    stats.by_terminal.get(terminal),
                    stats.by_pin_type.get(pin_type),
                    stats.by_time.get(at),
                    stats.by_time_channel.get((at, channel)),
                ):
                    if counts is not None:
                        for name in names:
                            counts.values[name] += int(n)
        failing = (
            select(c.terminal_id, func.count(c.stream_id.distinct()), func.count())
            .where(in_range, c.event_type == "PinVerificationFailed")
            .group_by(c.terminal_id)
            .order_by(func.count(c.stream_id.distinct()).desc(), c.terminal_id)
            .limit(top)
        )
        failing_rows: Iterable[tuple[Any, ...]] = conn.execute(failing)
        stats.distinct_card_failures = [(t, int(d), int(n)) for t, d, n in failing_rows]
    stats.by_time = {b: stats.by_time.get(b, Counts()) for b in _all_buckets(start, end, granularity, stats.by_time)}
    return stats


def _all_buckets(start: datetime, end: datetime, granularity: Granularity, seen: dict) -> list[datetime]:
    every = buckets(start, end, granularity)
    return sorted(set(every) | {b for b in seen if b >= bucket_start(start, granularity)})


class StoreAuditReads:
    """The auditors' port (service/app/ports.py: AuditReads) on a store."""

    def __init__(self, store: EventStore, keys: KeyRing, clock_skew: timedelta = CLOCK_TOLERANCE):
        self.store, self.keys, self.clock_skew = store, keys, clock_skew

    def card_version(self, card_id: str) -> int | None:
        return card_version(self.store, card_id)

    def card_history(self, card_id: str, f: Filter, order: Order, after_version: int | None, limit: int) -> list[LoggedEvent]:
        return card_history(self.store, card_id, f, order, after_version, limit)

    def query_events(self, f: Filter, order: Order, after: tuple[datetime, int] | None, limit: int) -> list[LoggedEvent]:
        return query_events(self.store, f, order, after, limit)

    def read_all(self, after_position: int, limit: int) -> list[LoggedEvent]:
        return self.store.log.read_all(after_position, limit)

    def head_position(self) -> int:
        return self.store.log.head_position()

    def statistics(self, start: datetime, end: datetime, granularity: Granularity, top: int) -> Statistics:
        return statistics(self.store, start, end, granularity, top)

    def checkpoint(self) -> tuple[str, str] | None:
        """The latest signed checkpoint note and the key to verify it with."""
        if self.keys.checkpoint is None:
            return None
        latest = checkpoints.latest_authentic(self.store, self.keys)
        return None if latest is None else (latest.note, checkpoints.public_verifier_key(self.keys))

    def signed_sizes(self, sizes: Sequence[int]) -> tuple[int, frozenset[int]]:
        """The latest authentic checkpoint's tree size (0: none), and which of
        `sizes` are sizes of authentic checkpoints (their notes verify)."""
        if self.keys.checkpoint is None:
            return 0, frozenset()
        return checkpoints.signed_sizes(self.store, self.keys, sizes)

    def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        with self._tree(size) as tree:
            return tree.inclusion(index)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        with self._tree(second) as tree:
            return tree.consistency(first)

    def leaf_proofs(self, events: Sequence[LoggedEvent], size: int) -> dict[int, LeafProof]:
        with self._tree(size) as tree:
            return tree.leaf_proofs(events)

    @contextmanager
    def _tree(self, size: int) -> Iterator[TreeReader]:
        """The tree of the log's first `size` events, read in one snapshot."""
        with self.store.snapshot() as view:
            try:
                yield TreeReader(view, size)
            except NodesMissing as exc:
                raise PreconditionFailed(
                    PreconditionViolation("TREE_NOT_FILLED", f"tree_size {size}", f"{exc}: the operator runs `pinlife migrate`")
                ) from None

    def verify(self, card_id: str | None, notes: Sequence[str], progress: Progress, cancelled: Callable[[], bool]) -> Report:
        """One card here; the whole store in a process of its own (check_process.py)."""
        if card_id is not None:
            return check_card(self.store, self.keys, card_id, self.clock_skew)
        return check_store_in_process(self.store.url, self.keys, notes, progress, cancelled, self.clock_skew)
