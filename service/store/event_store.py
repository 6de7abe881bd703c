"""The event store: append events, keep the lock-state projection and the PIN
verifiers in the same transaction, remember answers by request id, and read
streams and the global log back.

Write path (one transaction per batch of commands, see service/app/writer.py):
  1. prefetch: lock the batch's card rows in card-id order (SELECT ... FOR
     UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises
     writers), then read their projection rows, verifiers and any earlier
     answers to the batch's request ids: four round trips for the batch.
  2. the app layer decides each command against the cached state; appends,
     verifiers and answers are buffered in memory.
  3. flush: take the global positions from the single log_head row
     (UPDATE ... RETURNING), insert the events, upsert the projection and
     verifiers, insert the answers; then commit.

Global positions are gap-free and commit in order: the log_head row lock is
held from step 3 until commit, so a transaction that took lower positions has
always committed (and become visible) before a later one can take any. A
reader following the log by position therefore never skips an event that
commits late, on SQLite and on PostgreSQL with many service instances.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, String, and_, any_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from service.domain.chain import GENESIS_HASH, BrokenLink, StreamHead, canonical_time, event_hash, first_broken_link
from service.domain.events import (
    TERMINAL_STREAM_PREFIX,
    Event,
    Recorded,
    event_from_stored,
    is_card_stream,
    terminal_stream,
)
from service.domain.pins import PinType
from service.domain.state import CardState, PinState, evolve
from service.keys import Verifier
from service.store.engine import make_engine
from service.store.tables import cards, events, log_head, pin_states, pin_verifiers, requests, terminals


class StoreUnavailable(Exception):
    """The database cannot be reached; the caller should retry later."""


@dataclass(frozen=True)
class Envelope:
    """Who and what caused the events of one command."""

    channel: str
    terminal_id: str
    request_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class StoredRequest:
    terminal_id: str
    request_id: str
    card_id: str
    command: str
    fingerprint: str
    outcome: dict[str, Any]
    stream_version: int


@dataclass(frozen=True)
class StoredEvent:
    position: int
    card_id: str
    version: int
    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    pin_type: str | None
    channel: str
    terminal_id: str
    request_id: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def envelope(self) -> dict[str, Any]:
        """Every field that the hash covers (all but position and the hashes)."""
        return {
            "card_id": self.card_id,
            "version": self.version,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": canonical_time(self.occurred_at),
            "pin_type": self.pin_type,
            "channel": self.channel,
            "terminal_id": self.terminal_id,
            "request_id": self.request_id,
            "payload": self.payload,
        }


def utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def _stored_event(row) -> StoredEvent:
    m = row._mapping
    return StoredEvent(**{**m, "occurred_at": utc(m["occurred_at"])})


def _state_from_rows(card_id: str, version: int, rows: Iterable) -> CardState:
    pins = {}
    for r in rows:
        t = PinType(r.pin_type)
        pins[t] = PinState(t, r.consecutive_failures, r.status == "locked", utc(r.locked_at), r.last_version)
    return CardState(card_id, version, pins)


def _pin_row(card_id: str, pin: PinState) -> dict[str, Any]:
    return {
        "card_id": card_id,
        "pin_type": pin.pin_type.value,
        "status": "locked" if pin.locked else "active",
        "consecutive_failures": pin.consecutive_failures,
        "remaining_tries": pin.remaining_tries,
        "locked_at": pin.locked_at,
        "last_version": pin.last_version,
    }


def is_retryable(exc: BaseException) -> bool:
    """A conflict that a fresh attempt of the same transaction resolves."""
    if isinstance(exc, IntegrityError):
        return True  # e.g. two instances enrolling one card, or one request id, at once
    if isinstance(exc, OperationalError):
        code = getattr(exc.orig, "sqlstate", None)
        return code in ("40001", "40P01", "55P03") or "database is locked" in str(exc.orig)
    return False


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    return isinstance(exc, OperationalError) and (code == "" or code.startswith(("08", "57P")))


class UnitOfWork:
    """One transaction: cached reads of the batch's cards, buffered writes."""

    def __init__(self, conn: Connection):
        self._conn = conn
        self._pg = conn.dialect.name == "postgresql"
        self._states: dict[str, CardState] = {}
        self._hashes: dict[str, str] = {}
        self._existing: set[str] = set()
        self._verifiers: dict[tuple[str, PinType], Verifier] = {}
        self._requests: dict[tuple[str, str], StoredRequest] = {}
        self._looked_up: set[tuple[str, str]] = set()  # request keys already read (found or not)
        self._new_events: list[dict[str, Any]] = []
        self._dirty_pins: dict[tuple[str, PinType], PinState] = {}
        self._new_cards: dict[str, datetime] = {}  # card -> enrolled at
        self._new_verifiers: dict[tuple[str, PinType], dict[str, Any]] = {}
        self._new_requests: list[dict[str, Any]] = []
        self._terminal_heads: dict[str, tuple[int, str, bool]] = {}
        self._dirty_terminals: set[str] = set()

    # -- reads -------------------------------------------------------------
    def _among(self, column, values: list[str]):
        """column IN values. On PostgreSQL one array parameter (= ANY): an
        IN list of varying length gets a new prepared statement per length,
        whose generic plan can turn into a table scan."""
        if self._pg:
            return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String)))
        return column.in_(values)

    def prefetch(self, card_ids: Iterable[str], request_keys: Iterable[tuple[str, str]]) -> None:
        ids = sorted(set(card_ids) - self._states.keys())
        if ids:
            # Lock the card rows first (card-id order), then read: a row read
            # in the same statement as the lock could be a stale version.
            q = select(cards.c.card_id, cards.c.version, cards.c.last_hash).where(self._among(cards.c.card_id, ids))
            heads = self._conn.execute(q.order_by(cards.c.card_id).with_for_update()).all()
            q = (
                select(
                    pin_states.c.card_id, pin_states.c.pin_type, pin_states.c.consecutive_failures,
                    pin_states.c.status, pin_states.c.locked_at, pin_states.c.last_version,
                    pin_verifiers.c.key_id, pin_verifiers.c.digest,
                )  # fmt: skip
                .select_from(
                    pin_states.outerjoin(
                        pin_verifiers,
                        and_(pin_verifiers.c.card_id == pin_states.c.card_id, pin_verifiers.c.pin_type == pin_states.c.pin_type),
                    )
                )
                .where(self._among(pin_states.c.card_id, ids))
            )
            pins: dict[str, dict[PinType, PinState]] = {card_id: {} for card_id in ids}
            for card_id, pin_type, failures, status, locked_at, last_version, key_id, digest in self._conn.execute(q):
                t = PinType(pin_type)
                pins[card_id][t] = PinState(t, failures, status == "locked", utc(locked_at), last_version)
                if key_id is not None:
                    self._verifiers[(card_id, t)] = Verifier(key_id, digest)
            for card_id in ids:
                self._states[card_id] = CardState(card_id)
                self._hashes[card_id] = GENESIS_HASH
            for card_id, version, last_hash in heads:
                self._states[card_id] = CardState(card_id, version, pins[card_id])
                self._hashes[card_id] = last_hash
                self._existing.add(card_id)
        keys = set(request_keys) - self._looked_up
        if keys:
            self._looked_up |= keys
            # Both primary-key columns constrained, so the lookup probes the
            # index (SQLite scans the table for a row-value IN list).
            q = select(requests).where(
                self._among(requests.c.terminal_id, sorted({k[0] for k in keys})),
                self._among(requests.c.request_id, sorted({k[1] for k in keys})),
            )
            for r in self._conn.execute(q):
                if (r.terminal_id, r.request_id) in keys:
                    self._requests[(r.terminal_id, r.request_id)] = StoredRequest(
                        r.terminal_id, r.request_id, r.card_id, r.command, r.fingerprint, r.outcome, r.stream_version
                    )

    def card(self, card_id: str) -> CardState:
        if card_id not in self._states:
            self.prefetch([card_id], ())
        return self._states[card_id]

    def verifier(self, card_id: str, pin_type: PinType) -> Verifier | None:
        return self._verifiers.get((card_id, pin_type))

    def request(self, terminal_id: str, request_id: str) -> StoredRequest | None:
        key = (terminal_id, request_id)
        if key not in self._looked_up:
            self.prefetch((), [key])
        return self._requests.get(key)

    # -- buffered writes ---------------------------------------------------
    def _stage(self, stream_id: str, version: int, e: Event, env: Envelope, prev: str) -> str:
        """Buffer one event at the given stream version; returns its hash."""
        pin_type = getattr(e, "pin_type", None)
        stored = StoredEvent(
            position=0,
            card_id=stream_id,
            version=version,
            event_id=str(uuid.uuid4()),
            event_type=e.type_name,
            schema_version=e.schema_version,
            occurred_at=env.occurred_at,
            pin_type=pin_type.value if pin_type else None,
            channel=env.channel,
            terminal_id=env.terminal_id,
            request_id=env.request_id,
            payload=e.payload(),
            prev_hash=prev,
            hash="",
        )
        digest = event_hash(prev, stored.envelope())
        self._new_events.append({**stored.__dict__, "hash": digest})
        return digest

    def append(self, card_id: str, new_events: Sequence[Event], env: Envelope) -> CardState:
        """Append events to a card's stream; returns the evolved state."""
        env = replace(env, occurred_at=utc(env.occurred_at))  # stored as UTC on every backend
        state = before = self.card(card_id)
        prev = self._hashes[card_id]
        for e in new_events:
            prev = self._stage(card_id, state.version + 1, e, env, prev)
            state = evolve(state, Recorded(e, state.version + 1, env.occurred_at))
        for t, pin in state.pins.items():
            if pin.last_version > before.version:
                self._dirty_pins[(card_id, t)] = pin
        if card_id not in self._existing and card_id not in self._new_cards:
            self._new_cards[card_id] = env.occurred_at
        self._states[card_id] = state
        self._hashes[card_id] = prev
        return state

    def append_terminal(self, terminal_id: str, new_events: Sequence[Event], env: Envelope) -> int:
        """Append access events to a terminal's stream; returns its version."""
        env = replace(env, occurred_at=utc(env.occurred_at))
        if terminal_id not in self._terminal_heads:
            q = select(terminals.c.version, terminals.c.last_hash).where(terminals.c.terminal_id == terminal_id)
            row = self._conn.execute(q.with_for_update()).one_or_none()
            self._terminal_heads[terminal_id] = (row.version, row.last_hash, True) if row else (0, GENESIS_HASH, False)
        version, prev, existed = self._terminal_heads[terminal_id]
        for e in new_events:
            version += 1
            prev = self._stage(terminal_stream(terminal_id), version, e, env, prev)
        self._terminal_heads[terminal_id] = (version, prev, existed)
        self._dirty_terminals.add(terminal_id)
        return version

    def set_verifier(self, card_id: str, pin_type: PinType, verifier: Verifier) -> None:
        self._verifiers[(card_id, pin_type)] = verifier
        self._new_verifiers[(card_id, pin_type)] = {
            "card_id": card_id,
            "pin_type": pin_type.value,
            "key_id": verifier.key_id,
            "digest": verifier.digest,
            "set_at_version": self._states[card_id].version,
        }

    def remember(self, answer: StoredRequest, at: datetime) -> None:
        self._requests[(answer.terminal_id, answer.request_id)] = answer
        self._new_requests.append({**answer.__dict__, "created_at": utc(at)})

    def _upsert(self, table, rows: list[dict[str, Any]], keys: list[str]) -> None:
        if not rows:
            return
        dialect = postgresql if self._pg else sqlite
        stmt = dialect.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
        )
        self._conn.execute(stmt, rows)

    def flush(self) -> None:
        conn = self._conn
        new_cards = [
            {"card_id": c, "version": self._states[c].version, "last_hash": self._hashes[c], "status": "active", "enrolled_at": at}
            for c, at in self._new_cards.items()
        ]
        if new_cards:
            conn.execute(cards.insert(), new_cards)
        for t in sorted(self._dirty_terminals):
            version, last_hash, existed = self._terminal_heads[t]
            row = {"version": version, "last_hash": last_hash}
            if existed:
                conn.execute(update(terminals).where(terminals.c.terminal_id == t).values(**row))
            else:
                conn.execute(terminals.insert().values(terminal_id=t, **row))
        touched = {e["card_id"] for e in self._new_events if is_card_stream(e["card_id"])} - self._new_cards.keys()
        if touched:
            conn.execute(
                update(cards)
                .where(cards.c.card_id == bindparam("c_id"))
                .values(version=bindparam("c_version"), last_hash=bindparam("c_hash")),
                [{"c_id": c, "c_version": self._states[c].version, "c_hash": self._hashes[c]} for c in sorted(touched)],
            )
        if self._new_events:
            n = len(self._new_events)
            last = conn.execute(
                update(log_head).where(log_head.c.id == 1).values(position=log_head.c.position + n).returning(log_head.c.position)
            ).scalar_one()
            for i, row in enumerate(self._new_events):
                row["position"] = last - n + 1 + i
            conn.execute(events.insert(), self._new_events)
        self._upsert(pin_states, [_pin_row(c, p) for (c, _), p in self._dirty_pins.items()], ["card_id", "pin_type"])
        self._upsert(pin_verifiers, list(self._new_verifiers.values()), ["card_id", "pin_type"])
        if self._new_requests:
            conn.execute(requests.insert(), self._new_requests)


class EventStore:
    def __init__(self, url: str, *, read_pool: int = 4):
        self.url = url
        self.writer = make_engine(url, writer=True, pool_size=2)
        self.reader = self.writer if self.writer.dialect.name == "postgresql" else make_engine(url, pool_size=read_pool)
        self.dialect = self.writer.dialect.name

    def close(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        with self.writer.begin() as conn:
            uow = UnitOfWork(conn)
            yield uow
            uow.flush()

    # -- reads -------------------------------------------------------------
    def ping(self) -> None:
        """Raises if the database cannot be reached (health checking)."""
        with self.reader.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def read_card(self, card_id: str) -> CardState | None:
        with self.reader.begin() as conn:
            version = conn.execute(select(cards.c.version).where(cards.c.card_id == card_id)).scalar_one_or_none()
            if version is None:
                return None
            rows = conn.execute(select(pin_states).where(pin_states.c.card_id == card_id))
            return _state_from_rows(card_id, version, rows)

    def stream(self, card_id: str) -> list[StoredEvent]:
        with self.reader.begin() as conn:
            q = select(events).where(events.c.card_id == card_id).order_by(events.c.version)
            return [_stored_event(r) for r in conn.execute(q)]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        with self.reader.begin() as conn:
            q = select(events).where(events.c.position > after_position).order_by(events.c.position).limit(limit)
            return [_stored_event(r) for r in conn.execute(q)]

    def all_events(self, batch: int = 5000) -> Iterator[StoredEvent]:
        after = 0
        while page := self.read_all(after, batch):
            yield from page
            after = page[-1].position

    def head_position(self) -> int:
        with self.reader.begin() as conn:
            return conn.execute(select(log_head.c.position).where(log_head.c.id == 1)).scalar_one()

    def verifier(self, card_id: str, pin_type: PinType) -> Verifier | None:
        with self.reader.begin() as conn:
            q = select(pin_verifiers).where(pin_verifiers.c.card_id == card_id, pin_verifiers.c.pin_type == pin_type.value)
            r = conn.execute(q).one_or_none()
            return Verifier(r.key_id, r.digest) if r else None

    def verifiers_by_key(self) -> dict[str, int]:
        """How many verifiers each key id still protects (retire a key at 0)."""
        with self.reader.begin() as conn:
            q = select(pin_verifiers.c.key_id, func.count()).group_by(pin_verifiers.c.key_id)
            return dict(conn.execute(q).all())

    def projection(self) -> dict[str, CardState]:
        """The live lock-state projection of every card."""
        with self.reader.begin() as conn:
            versions = dict(conn.execute(select(cards.c.card_id, cards.c.version)).all())
            rows: dict[str, list] = {}
            for r in conn.execute(select(pin_states)):
                rows.setdefault(r.card_id, []).append(r)
        return {c: _state_from_rows(c, v, rows.get(c, ())) for c, v in versions.items()}

    def rebuild(self, batch: int = 20000) -> dict[str, CardState]:
        """The projection computed from the events alone (card streams only).
        Reads just the columns evolve needs, in position order."""
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the fold keeps millions of small objects alive; the cycle collector would rescan them again and again
        try:
            return self._rebuild(batch)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _rebuild(self, batch: int) -> dict[str, CardState]:
        states: dict[str, CardState] = {}
        cols = (events.c.position, events.c.card_id, events.c.version, events.c.event_type, events.c.pin_type,
                events.c.payload, events.c.occurred_at)  # fmt: skip
        after = 0
        while True:
            with self.reader.begin() as conn:
                q = select(*cols).where(events.c.position > after).order_by(events.c.position).limit(batch)
                rows = conn.execute(q).all()
            if not rows:
                return states
            for _, card_id, version, event_type, pin_type, payload, occurred_at in rows:
                if is_card_stream(card_id):
                    state = states.get(card_id) or CardState(card_id)
                    event = event_from_stored(event_type, pin_type, payload)
                    states[card_id] = evolve(state, Recorded(event, version, utc(occurred_at)))
            after = rows[-1][0]

    def heads(self, stream_id: str | None = None) -> dict[str, StreamHead]:
        """Head rows of card and terminal streams (all, or one)."""
        with self.reader.begin() as conn:
            qc = select(cards.c.card_id, cards.c.version, cards.c.last_hash)
            qt = select(terminals.c.terminal_id, terminals.c.version, terminals.c.last_hash)
            if stream_id is not None:
                qc = qc.where(cards.c.card_id == stream_id)
                qt = qt.where(terminals.c.terminal_id == stream_id.removeprefix(TERMINAL_STREAM_PREFIX))
            out = {c: StreamHead(c, v, h) for c, v, h in conn.execute(qc)}
            out.update({terminal_stream(t): StreamHead(terminal_stream(t), v, h) for t, v, h in conn.execute(qt)})
        return out

    def first_broken_link(self, card_id: str | None = None) -> BrokenLink | None:
        """Walk the hash chain of one stream, or of every stream in the store,
        and check that each ends where its head says."""
        if card_id is not None:
            rows = [(e.position, e.envelope(), e.prev_hash, e.hash) for e in self.stream(card_id)]
            return first_broken_link(rows, self.heads(card_id).get(card_id, StreamHead(card_id, 0, GENESIS_HASH)))
        streams: dict[str, list[StoredEvent]] = {}
        for e in self.all_events():
            streams.setdefault(e.card_id, []).append(e)
        heads = self.heads()
        broken = []
        for stream_id in streams.keys() | heads.keys():
            evs = sorted(streams.get(stream_id, []), key=lambda e: e.version)
            rows = [(e.position, e.envelope(), e.prev_hash, e.hash) for e in evs]
            if b := first_broken_link(rows, heads.get(stream_id, StreamHead(stream_id, 0, GENESIS_HASH))):
                broken.append(b)
        return min(broken, key=lambda b: (b.position, b.card_id), default=None)
