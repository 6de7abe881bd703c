"""The whole-store integrity check behind `pinlife check` and
AuditService.VerifyIntegrity: every problem a database-level attacker could
leave, each named by stream, version and position where it has one
(service/domain/integrity.py: Report).

It judges one consistent snapshot of the store (EventStore.snapshot), so
traffic committed while it runs is never mistaken for tampering, and it
reads the store once, a batch of cards at a time, in bounded memory, and
in statements that each read a bounded range (an index range of positions
or stream ids), so none outlasts the statement timeout on a large store:

- positions 1..head without a gap, and no event past the head;
- for each card (a batch of BATCH cards, in card-id order): its keyed links
  up to its head, its MAC over its head, PIN states and verifiers, its
  projection against the fold of its events, and its lawful history (the
  first event the domain's rules could not have produced, lawful.py);
- card streams without a head row; terminal streams (a page of events at a
  time) and their heads, and each terminal row's MAC over its throttle state
  and head;
- the stored signed checkpoints, and any checkpoint the caller supplies
  (checkpoints.py): a truncated log or a deleted stream shows there.

A stored event this release cannot read is a finding (`unreadable`) at its
position, not a crash. `cancelled` is asked between batches: the check then
stops with CheckCancelled.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, func, not_, select

from ..domain.chain import GENESIS_HASH, BrokenLink, Link, StreamHead, first_broken_link
from ..domain.events import Recorded
from ..domain.integrity import CheckCancelled, Progress, Report
from ..domain.lawful import CLOCK_TOLERANCE, first_clock_step, first_unlawful
from ..domain.log import LoggedEvent
from ..domain.pins import PIN_TYPE_BY_VALUE
from ..domain.state import CardState, evolve
from ..domain.streams import TERMINAL_STREAM_PREFIX, terminal_stream
from ..keys.ring import KeyRing, SecretKind, Verifier
from . import checkpoints
from .event_store import EventStore, StoreView
from .projection import PIN_READ_COLUMNS, card_state, state_message, terminal_message, window_from_row
from .records import logged_event
from .tables import cards, events, pin_states, secrets, terminals

LISTED = 20  # cards named per kind of problem; the count is always complete
BATCH = 500  # cards read at once
STREAM_PAGE = 5000  # events of one terminal stream read at once
STREAM_IDS = 1000  # stream ids read at once past the last card
POSITION_RANGE = 1_000_000  # positions counted by one statement


def _same(value: Any) -> Any:
    return value


def _never() -> bool:
    return False


def _quiet(phase: str, done: int, total: int) -> None:
    pass


def check_store(
    store: EventStore,
    keys: KeyRing,
    supplied: Sequence[str] = (),
    progress: Progress = _quiet,
    cancelled: Callable[[], bool] = _never,
    clock_skew: timedelta = CLOCK_TOLERANCE,
    pace: float = 1.0,
) -> Report:
    """The whole store, in one snapshot. supplied: signed checkpoint notes
    kept outside the store. progress is told each phase as it starts and
    ends, and each batch of cards. clock_skew: how far a stream's
    occurred-at may step back (instances' clocks). pace: the share of its
    time it works (below 1 it rests between batches: a check beside live
    traffic)."""
    with store.snapshot() as view:
        return _Check(view, keys, progress, cancelled, clock_skew, pace).run(supplied)


def check_card(store: EventStore, keys: KeyRing, card_id: str, clock_skew: timedelta = CLOCK_TOLERANCE) -> Report:
    """One card, in one snapshot: its keyed links up to its head, its MAC,
    its projection against a fold of its events, and its lawful history."""
    with store.snapshot() as view:
        check = _Check(view, keys, _quiet, _never, clock_skew)
        check.report.head_position = view.log.head_position()
        heads = _card_heads(view, [card_id])
        stream = view.log.stream(card_id)
        check.report.events = len(stream)
        check.report.cards = 1
        if heads:
            check._cards(heads, {card_id: stream}, [card_id])
        else:  # a stream whose head row is gone
            check._broken(first_broken_link(_links(stream), check.key, StreamHead(card_id, 0, GENESIS_HASH)))
        return check._finish()


class _Listed:
    """The first LISTED ids (in sort order) of a kind of problem, and how many there are."""

    def __init__(self) -> None:
        self.first: list[str] = []
        self.count = 0

    def add(self, stream_id: str) -> None:
        self.count += 1
        bisect.insort(self.first, stream_id)
        del self.first[LISTED:]


class _Check:
    def __init__(
        self,
        view: StoreView,
        keys: KeyRing,
        progress: Progress,
        cancelled: Callable[[], bool],
        clock_skew: timedelta,
        pace: float = 1.0,
    ):
        self.view, self.keys, self.progress, self.cancelled, self.clock_skew = view, keys, progress, cancelled, clock_skew
        self.pace = pace  # the share of its time the check works (1: flat out; 0.5: it rests as long as it works)
        self.key = keys.integrity.key_or_none
        self.report = Report()
        self.broken: BrokenLink | None = None
        self.mac, self.projection, self.terminal_mac = _Listed(), _Listed(), _Listed()
        self.terminal_streams: set[str] = set()  # seen in the log (_headless), for _terminals

    def _stop_if_cancelled(self) -> None:
        if self.cancelled():
            raise CheckCancelled("the integrity check was cancelled")

    def _broken(self, b: BrokenLink | None) -> None:
        if b is not None and (self.broken is None or (b.position, b.stream_id) < (self.broken.position, self.broken.stream_id)):
            self.broken = b

    def run(self, supplied: Sequence[str]) -> Report:
        r = self.report
        r.head_position = head = self.view.log.head_position()
        self.progress("positions", 0, 1)
        r.events, gap = _positions(self.view, head)
        self._broken(gap)
        self.progress("positions", 1, 1)
        total = _count(self.view, cards)
        self.progress("cards", 0, total)
        after: str | None = None
        for batch in _card_batches(self.view):
            self._stop_if_cancelled()
            started = time.monotonic()
            ids = [row[0] for row in batch]
            streams = _streams(self.view, ids)
            r.cards += len(ids)
            self._cards(batch, streams, ids)
            self._headless(_stream_ids(self.view, after, ids[-1]), set(ids))
            after = ids[-1]
            self.progress("cards", r.cards, total)
            if self.pace < 1:  # leave the cores and the database to the PIN path the rest of the time
                time.sleep((time.monotonic() - started) * (1 / self.pace - 1))
        self._headless(_stream_ids(self.view, after, None), set())
        self.progress("terminals", 0, 1)
        self._terminals()
        self.progress("terminals", 1, 1)
        self.progress("checkpoints", 0, len(supplied) + 1)
        self._checkpoints(supplied)
        self.progress("checkpoints", len(supplied) + 1, len(supplied) + 1)
        return self._finish()

    def _finish(self) -> Report:
        r = self.report
        r.first_broken_link = self.broken
        r.cards_failing_mac, r.cards_failing_mac_count = self.mac.first, self.mac.count
        r.projection_mismatches, r.projection_mismatch_count = self.projection.first, self.projection.count
        r.terminals_failing_mac, r.terminals_failing_mac_count = self.terminal_mac.first, self.terminal_mac.count
        return r

    def _cards(self, heads: Sequence[Sequence[Any]], streams: dict[str, list[LoggedEvent]], ids: list[str]) -> None:
        """Each card's links, MAC, projection and lawful history."""
        pins = _pin_rows(self.view, ids)
        verifiers = _verifiers(self.view, ids)
        for card_id, version, last_hash, status, ward, mac in heads:
            stream = streams.get(card_id, [])
            self._broken(first_broken_link(_links(stream), self.key, StreamHead(card_id, version, last_hash)))
            projected = card_state(card_id, version, status, ward, pins.get(card_id, ()))
            if not self.keys.integrity.checks(mac, state_message(projected, last_hash, verifiers.get(card_id, {}))):
                self.mac.add(card_id)
            recorded = self._readable(stream)
            if recorded is None:
                continue  # reported as unreadable: neither folded nor judged
            rebuilt = CardState(card_id)
            for rec in recorded:
                try:
                    rebuilt = evolve(rebuilt, rec)
                except Exception:  # noqa: BLE001 - a stream the fold cannot apply is judged unlawful below
                    break
            if rebuilt != projected:
                self.projection.add(card_id)
            self._unlawful(card_id, recorded)
            self._clock_step(card_id, recorded)
        self._stop_if_cancelled()

    def _headless(self, stream_ids: Iterable[str], heads: set[str]) -> None:
        """The streams of the log in a range of stream ids that the card
        heads of that range do not name: a card stream whose head row is gone
        (a deleted card) is broken at its first event; terminal streams are
        noted for _terminals. Together the ranges cover every stream id, so
        no statement reads the whole log."""
        for stream_id in stream_ids:
            if stream_id in heads:
                continue
            if stream_id.startswith(TERMINAL_STREAM_PREFIX):
                self.terminal_streams.add(stream_id)
                continue
            self._stop_if_cancelled()
            pages = _stream_pages(self.view, stream_id, self._unreadable_counted)
            self._broken(first_broken_link(pages, self.key, StreamHead(stream_id, 0, GENESIS_HASH)))

    def _readable(self, stream: list[LoggedEvent]) -> list[Recorded] | None:
        recorded = []
        for e in stream:
            if e.event is None:
                self._unreadable(e)
                return None
            recorded.append(e.recorded())
        return recorded

    def _unreadable(self, e: LoggedEvent) -> None:
        r = self.report
        r.unreadable_count += 1
        if r.first_unreadable is None or e.position < r.first_unreadable["position"]:
            r.first_unreadable = {
                "stream_id": e.stream_id,
                "version": e.version,
                "position": e.position,
                "event_type": e.event_type,
                "reason": e.unreadable or "",
            }

    def _unlawful(self, stream_id: str, recorded: list[Recorded]) -> None:
        r = self.report
        if r.first_unlawful is not None and r.first_unlawful["stream_id"] <= stream_id:
            return  # the first by stream id is kept
        if (u := first_unlawful(recorded, clock_tolerance=None)) is not None:
            r.first_unlawful = {"stream_id": stream_id, **asdict(u)}

    def _clock_step(self, stream_id: str, recorded: list[Recorded]) -> None:
        if (step := first_clock_step(recorded, self.clock_skew)) is None:
            return
        r = self.report
        r.clock_steps += 1
        if r.first_clock_step is None or stream_id < r.first_clock_step["stream_id"]:
            r.first_clock_step = {"stream_id": stream_id, **asdict(step), "tolerated_seconds": self.clock_skew.total_seconds()}

    def _terminals(self) -> None:
        """Each terminal row's MAC, and its stream's links to its head, a
        page at a time; and terminal streams whose head row is gone."""
        t = terminals.c
        with self.view.read() as conn:
            rows: Sequence[tuple[Any, ...]] = conn.execute(
                select(t.terminal_id, t.version, t.last_hash, t.throttle_failures, t.throttled_until, t.repeats, t.mac)
            ).all()
        known = set()
        for terminal_id, version, last_hash, failures, until, repeats, mac in rows:
            self._stop_if_cancelled()
            sid = terminal_stream(terminal_id)
            known.add(sid)
            try:
                window = window_from_row(failures, until, _same)
                message = terminal_message(terminal_id, version, last_hash, window, repeats)
            except (ValueError, TypeError, AttributeError):  # a window that does not even parse fails its MAC too
                message = None
            if message is None or not self.keys.integrity.checks(mac, message):
                self.terminal_mac.add(sid)
            stream = _stream_pages(self.view, sid, self._unreadable_counted)
            self._broken(first_broken_link(stream, self.key, StreamHead(sid, version, last_hash)))
        for sid in sorted(self.terminal_streams - known):
            self._broken(
                first_broken_link(
                    _stream_pages(self.view, sid, self._unreadable_counted), self.key, StreamHead(sid, 0, GENESIS_HASH)
                )
            )

    def _unreadable_counted(self, e: LoggedEvent) -> None:
        if e.event is None:
            self._unreadable(e)

    def _checkpoints(self, supplied: Sequence[str]) -> None:
        r, keys = self.report, self.keys
        r.stored_checkpoints = len(checkpoints.stored(self.view))
        r.supplied_checkpoints = len(supplied)
        if keys.checkpoint is not None and (p := checkpoints.check_stored(self.view, keys)):
            r.checkpoint_problem = p._asdict()
        vkeys = [checkpoints.public_verifier_key(keys)] if keys.checkpoint is not None else []
        for note in supplied:
            if p := checkpoints.check_against(self.view, note, vkeys):
                r.supplied_checkpoint_problem = p._asdict()
                break


def _links(stream: Iterable[LoggedEvent]) -> Iterator[Link]:
    return (e.link() for e in stream)


def _count(view: StoreView, table: Any) -> int:
    with view.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _positions(view: StoreView, head: int) -> tuple[int, BrokenLink | None]:
    """How many events the log holds, and whether they are positions
    1..head, each once: the first missing one, or the log ending elsewhere
    than its head. Counted POSITION_RANGE positions a statement (a range of
    the primary key), so no statement outlasts the statement timeout
    however long the log."""
    p = events.c.position
    nxt = events.alias("nxt")
    missing = None
    with view.read() as conn:
        row: tuple[Any, ...] = tuple(conn.execute(select(func.min(p), func.max(p))).one())
        low, high = row[0], row[1]
        count = int(conn.execute(select(func.count()).select_from(events).where(p > head)).scalar_one())
        for lo in range(0, head, POSITION_RANGE):
            hi = min(lo + POSITION_RANGE, head)
            n = int(conn.execute(select(func.count()).select_from(events).where(p > lo, p <= hi)).scalar_one())
            count += n
            if missing is None and n < hi - lo:  # the first range with a gap: its first missing position
                if lo == 0 and (low is None or low > 1):
                    missing = 1
                else:  # every position up to lo is there: the first whose successor is not
                    missing = conn.execute(
                        select(func.min(p + 1)).where(p >= lo, p < hi, not_(exists().where(nxt.c.position == p + 1)))
                    ).scalar_one_or_none()
        if count == head and (count == 0 or (low == 1 and high == head)):
            return count, None
        if missing is not None:
            after = conn.execute(select(events.c.stream_id, events.c.version).where(p > missing).order_by(p).limit(1)).first()
            sid, version = (after.stream_id, after.version) if after else ("", 0)
            return count, BrokenLink(sid, version, missing, f"position {missing} is missing from the log")
    return count, BrokenLink("", 0, (high or 0) + 1, f"the log ends at position {high or 0} but its head is {head}")


# A card's head row as _Check._cards takes it: (card_id, version, last_hash, status, ward, mac).
_HEADS = select(cards.c.card_id, cards.c.version, cards.c.last_hash, cards.c.status, cards.c.ward, cards.c.mac)


def _card_batches(view: StoreView) -> Iterator[list[Sequence[Any]]]:
    """Card heads (_HEADS), BATCH at a time, in card-id order."""
    c = cards.c
    after: str | None = None
    while True:
        q = _HEADS.order_by(c.card_id).limit(BATCH)
        if after is not None:
            q = q.where(c.card_id > after)
        with view.read() as conn:
            batch: list[Sequence[Any]] = list(conn.execute(q).all())
        if not batch:
            return
        yield batch
        after = batch[-1][0]


def _card_heads(view: StoreView, ids: list[str]) -> list[Sequence[Any]]:
    with view.read() as conn:
        return list(conn.execute(_HEADS.where(cards.c.card_id.in_(ids))).all())


def _streams(view: StoreView, ids: list[str]) -> dict[str, list[LoggedEvent]]:
    q = select(events).where(events.c.stream_id.in_(ids)).order_by(events.c.stream_id, events.c.version)
    out: dict[str, list[LoggedEvent]] = {}
    with view.read() as conn:
        for row in conn.execute(q):
            e = logged_event(row)
            out.setdefault(e.stream_id, []).append(e)
    return out


def _pin_rows(view: StoreView, ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    with view.read() as conn:
        for r in conn.execute(select(pin_states).where(pin_states.c.card_id.in_(ids))):
            out.setdefault(r.card_id, []).append(tuple(getattr(r, c) for c in PIN_READ_COLUMNS))
    return out


def _verifiers(view: StoreView, ids: list[str]) -> dict[str, dict[Any, Verifier]]:
    s = secrets.c
    q = select(s.card_id, s.name, s.key_id, s.digest).where(s.kind == SecretKind.PIN, s.card_id.in_(ids))
    out: dict[str, dict[Any, Verifier]] = {}
    with view.read() as conn:
        for r in conn.execute(q):
            out.setdefault(r.card_id, {})[PIN_TYPE_BY_VALUE.get(r.name)] = Verifier(r.key_id, r.digest)
    return out


def _stream_ids(view: StoreView, after: str | None, upto: str | None) -> Iterator[str]:
    """The stream ids of the log after `after` up to `upto` (both None: no
    bound), in order, from the (stream_id, version) index, STREAM_IDS a
    statement (a batch's range of card ids may also hold every terminal
    stream: `terminal:` sorts among the card ids)."""
    sid = events.c.stream_id
    while True:
        q = select(sid).distinct().order_by(sid).limit(STREAM_IDS)
        if after is not None:
            q = q.where(sid > after)
        if upto is not None:
            q = q.where(sid <= upto)
        with view.read() as conn:
            page = [str(s) for (s,) in conn.execute(q)]
        yield from page
        if len(page) < STREAM_IDS:
            return
        after = page[-1]


def _stream_pages(view: StoreView, stream_id: str, seen: Callable[[LoggedEvent], None]) -> Iterator[Link]:
    """One stream's links in version order, STREAM_PAGE events at a time."""
    after = 0
    while True:
        q = (
            select(events)
            .where(and_(events.c.stream_id == stream_id, events.c.version > after))
            .order_by(events.c.version)
            .limit(STREAM_PAGE)
        )
        with view.read() as conn:
            page = [logged_event(row) for row in conn.execute(q)]
        for e in page:
            seen(e)
            yield e.link()
        if len(page) < STREAM_PAGE:
            return
        after = page[-1].version
