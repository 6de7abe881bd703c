"""The store's readers, on the read engine, never inside a write batch and
never with a row lock. Each is an object of its own that EventStore holds:

- LogReader (store.log): one log's events, a stream, the log after a
  position, its head;
- CardReader (store.cards): the lock-state projection, a card, its
  rebuild from the events alone, and the secrets' keys.

Rows become values through one mapper (records.logged_event); the rebuild
reads only the columns evolve needs and decodes each distinct stored form
once (its hot path)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, func, select

from ..domain.events import Event, Recorded
from ..domain.log import LoggedEvent
from ..domain.state import CardState, evolve
from ..domain.streams import is_card_stream
from ..domain.upcasting import event_from_stored
from ..keys.ring import SecretRef, Verifier
from .hot_sql import HotSql
from .projection import PIN_READ_COLUMNS, card_state
from .records import logged_event, utc
from .tables import MAIN_LOG, Log, cards, events, log_head, pin_states, secrets


@functools.lru_cache(maxsize=8192)
def _event_from_text(event_type: str, schema_version: int, pin_type: str | None, payload: str) -> Event:
    """Events are immutable and most payloads repeat (failure counts, an
    empty payload): decode each distinct stored form once."""
    return event_from_stored(event_type, schema_version, pin_type, json.loads(payload))


def _state_from_rows(card_id: str, version: int, status: str, ward: str | None, rows: Iterable) -> CardState:
    return card_state(card_id, version, status, ward, (tuple(getattr(r, c) for c in PIN_READ_COLUMNS) for r in rows))


# Opens a read transaction: the read engine's begin() (each read its own
# transaction), or one snapshot's (EventStore.snapshot: every read the same state).
Begin = Callable[[], AbstractContextManager[Connection]]


class LogReader:
    """One log's events."""

    def __init__(self, begin: Begin, log: Log = MAIN_LOG):
        self.begin = begin
        self.head_query = select(log_head.c.position).where(log_head.c.id == log.head_id)  # the log's last position

    def stream(self, stream_id: str) -> list[LoggedEvent]:
        with self.begin() as conn:
            q = select(events).where(events.c.stream_id == stream_id).order_by(events.c.version)
            return [logged_event(r) for r in conn.execute(q)]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[LoggedEvent]:
        with self.begin() as conn:
            q = select(events).where(events.c.position > after_position).order_by(events.c.position).limit(limit)
            return [logged_event(r) for r in conn.execute(q)]

    def all_events(self, batch: int = 5000) -> Iterator[LoggedEvent]:
        after = 0
        while page := self.read_all(after, batch):
            yield from page
            after = page[-1].position

    def head_position(self) -> int:
        with self.begin() as conn:
            return conn.execute(self.head_query).scalar_one()


class CardReader:
    """The lock-state projection and the secrets' keys."""

    def __init__(self, begin: Begin, hot_sql: HotSql):
        self.begin = begin
        self._hot_sql = hot_sql

    def read_card(self, card_id: str) -> CardState | None:
        """One card's projection as the tables hold it."""
        with self.begin() as conn:
            q = select(cards.c.version, cards.c.status, cards.c.ward).where(cards.c.card_id == card_id)
            head = conn.execute(q).one_or_none()
            if head is None:
                return None
            rows = conn.execute(select(pin_states).where(pin_states.c.card_id == card_id))
            return _state_from_rows(card_id, head.version, head.status, head.ward, rows)

    def secret(self, ref: SecretRef) -> Verifier | None:
        with self.begin() as conn:
            q = select(secrets).where(secrets.c.card_id == ref.card_id, secrets.c.kind == ref.kind, secrets.c.name == ref.name)
            r = conn.execute(q).one_or_none()
            return Verifier(r.key_id, r.digest) if r else None

    def secrets_by_key(self) -> dict[str, int]:
        """How many secrets each key id still protects (retire a key at 0)."""
        with self.begin() as conn:
            q = select(secrets.c.key_id, func.count()).group_by(secrets.c.key_id)
            return dict(conn.execute(q).all())

    def projection(self) -> dict[str, CardState]:
        """The live lock-state projection of every card."""
        with self.begin() as conn:
            heads: Sequence[tuple[Any, ...]] = conn.execute(
                select(cards.c.card_id, cards.c.version, cards.c.status, cards.c.ward)
            ).all()
            rows: dict[str, list] = {}
            for r in conn.execute(select(pin_states)):
                rows.setdefault(r.card_id, []).append(r)
        return {c: _state_from_rows(c, v, s, w, rows.get(c, ())) for c, v, s, w in heads}

    def rebuild(self, batch: int = 20000) -> dict[str, CardState]:
        """The whole projection computed from the events alone, in one dict
        (a small store's, to compare with projection(); a large one is
        folded a page at a time by rebuilt())."""
        return dict(self.rebuilt(batch))

    def rebuilt(self, batch: int = 20000) -> Iterator[tuple[str, CardState]]:
        """Each card's state computed from its events alone, in card-id
        order: the log is read `batch` events at a time in stream order
        (the (stream_id, version) index), and a card is given as soon as its
        stream ends, so memory holds one page and one card however many
        cards the store has. Reads only the columns evolve needs."""
        sql = self._hot_sql
        read_time = sql.read_time
        card: str | None = None
        state = CardState("")
        after: tuple[str, int] = ("", 0)
        while True:
            with self.begin() as conn:
                rows: Sequence[tuple[Any, ...]] = conn.exec_driver_sql(sql.rebuild_page, (*after, batch)).fetchall()
            for stream_id, version, event_type, schema_version, pin_type, payload, occurred_at in rows:
                if stream_id != card:
                    if card is not None:
                        yield card, state
                    card, state = (stream_id, CardState(stream_id)) if is_card_stream(stream_id) else (None, state)
                if card is not None:
                    event = _event_from_text(event_type, schema_version, pin_type, payload)
                    state = evolve(state, Recorded(event, version, utc(read_time(occurred_at))))
            if len(rows) < batch:
                if card is not None:
                    yield card, state
                return
            after = (rows[-1][0], rows[-1][1])
