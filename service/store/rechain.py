"""Keying a store written before keyed chains (migration 0005), and sealing
answers kept before answers had MACs (migration 0008) and terminal rows
from before terminals had MACs (migration 0009): once, as the schema
owner, with the integrity key. `pinlife migrate` runs it after the
schema migrations.

It first proves the old, unkeyed chain intact and the projection equal to a
rebuild (it refuses otherwise: keying a damaged store would bless the
damage), then relinks every event in position order under the current
integrity key (the links now cover positions), and writes each stream's
head, each card's MAC and each terminal's MAC, in one transaction. The append-only triggers are
lifted for that transaction only.
"""

from __future__ import annotations

from sqlalchemy import select, text, update

from ..app.ports import StoredRequest
from ..domain.chain import GENESIS_HASH, canonical_time, legacy_hash, link_hash
from ..domain.pins import PIN_TYPE_BY_VALUE
from ..domain.streams import TERMINAL_STREAM_PREFIX, is_card_stream
from ..keys.ring import IntegrityKeys, SecretKind, Verifier
from .event_store import EventStore
from .projection import (
    PIN_READ_COLUMNS,
    answer_message,
    card_state,
    state_message,
    terminal_message,
    window_from_row,
)
from .tables import cards, events, pin_states, requests, secrets, terminals


class RechainRefused(Exception):
    pass


def unkeyed_events(store: EventStore) -> int:
    with store.reader.begin() as conn:
        q = select(events.c.position).where(events.c.key_id.is_(None)).limit(1)
        return int(conn.execute(q).first() is not None)


def rechain(store: EventStore, integrity: IntegrityKeys) -> int:
    """Key every unkeyed event; returns how many were relinked (0 when the
    store is already keyed)."""
    if not unkeyed_events(store):
        return 0
    with store.reader.begin() as conn:
        keyed = conn.execute(select(events.c.position).where(events.c.key_id.is_not(None)).limit(1)).first()
    if keyed is not None:
        raise RechainRefused("the store holds both keyed and unkeyed events; run `pinlife check`")
    if store.cards.rebuild() != store.cards.projection():
        raise RechainRefused("the projection does not match a rebuild from the events; run `pinlife check`")
    prev: dict[str, str] = {}
    rows = []
    for e in store.log.all_events():
        env = e.envelope()
        expected_prev = prev.get(e.stream_id, GENESIS_HASH)
        if e.prev_hash != expected_prev or legacy_hash(e.prev_hash, env) != e.hash:
            raise RechainRefused(f"the unkeyed chain is broken at {e.stream_id} version {e.version} (position {e.position})")
        prev[e.stream_id] = e.hash
        rows.append((e.position, e.stream_id, env))
    key_id = integrity.current
    key = integrity.key(key_id)
    with store.writer.begin() as conn:
        triggers = _lift_append_only(conn, store.dialect)
        links: dict[str, str] = {}
        for position, stream_id, env in rows:
            p = links.get(stream_id, GENESIS_HASH)
            links[stream_id] = link = link_hash(key, p, position, env)
            conn.execute(update(events).where(events.c.position == position).values(prev_hash=p, hash=link, key_id=key_id))
        _restore_append_only(conn, store.dialect, triggers)
        for stream_id, link in links.items():
            if is_card_stream(stream_id):
                conn.execute(update(cards).where(cards.c.card_id == stream_id).values(last_hash=link))
            else:
                t = stream_id.removeprefix(TERMINAL_STREAM_PREFIX)
                conn.execute(update(terminals).where(terminals.c.terminal_id == t).values(last_hash=link))
        _mac_every_card(conn, integrity, store._hot_sql.read_time)
        _mac_terminals(conn, integrity, every=True)
    return len(rows)


def _mac_every_card(conn, integrity: IntegrityKeys, read_time) -> None:
    heads = conn.execute(select(cards.c.card_id, cards.c.version, cards.c.last_hash, cards.c.status, cards.c.ward)).all()
    pins: dict[str, list] = {}
    for r in conn.execute(select(pin_states)):
        pins.setdefault(r.card_id, []).append(tuple(getattr(r, c) for c in PIN_READ_COLUMNS))
    verifiers: dict[str, dict] = {}
    q = select(secrets.c.card_id, secrets.c.name, secrets.c.key_id, secrets.c.digest).where(secrets.c.kind == SecretKind.PIN)
    for c, name, key_id, digest in conn.execute(q):
        verifiers.setdefault(c, {})[PIN_TYPE_BY_VALUE[name]] = Verifier(key_id, digest)
    for c, version, last_hash, status, ward in heads:
        state = card_state(c, version, status, ward, pins.get(c, ()), read_time)
        mac = integrity.tag(state_message(state, last_hash, verifiers.get(c, {})))
        conn.execute(update(cards).where(cards.c.card_id == c).values(mac=mac))


def _mac_terminals(conn, integrity: IntegrityKeys, *, every: bool) -> int:
    """MAC terminal rows as they are (every one, or those without a MAC); how many."""
    t = terminals.c
    q = select(t.terminal_id, t.version, t.last_hash, t.throttle_failures, t.throttled_until, t.repeats)
    rows = conn.execute(q if every else q.where(t.mac.is_(None))).all()
    for terminal_id, version, last_hash, failures, until, repeats in rows:
        window = window_from_row(failures, until, lambda v: v)
        mac = integrity.tag(terminal_message(terminal_id, version, last_hash, window, repeats))
        conn.execute(update(terminals).where(t.terminal_id == terminal_id).values(mac=mac))
    return len(rows)


def _lift_append_only(conn, dialect: str) -> list[str]:
    """Lift the append-only triggers in this transaction; what restores them."""
    if dialect == "postgresql":
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update_delete"))
        return ["ALTER TABLE events ENABLE TRIGGER events_no_update_delete"]
    q = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
    saved = conn.execute(text(q)).all()
    for name, _ in saved:
        conn.execute(text(f"DROP TRIGGER {name}"))
    return [sql for _, sql in saved]


def _restore_append_only(conn, dialect: str, statements: list[str]) -> None:
    for sql in statements:
        conn.execute(text(sql))


def seal_answers(store: EventStore, integrity: IntegrityKeys) -> int:
    """MAC the kept answers stored before migration 0008 (those without
    one), under the current integrity key; how many. Nothing else changes."""
    r = requests.c
    with store.writer.begin() as conn:
        rows = conn.execute(select(requests).where(r.mac.is_(None))).all()
        for row in rows:
            answer = StoredRequest(
                row.terminal_id, row.request_id, row.card_id, row.command, row.fingerprint, row.outcome, row.stream_version
            )
            message = answer_message(answer, canonical_time(row.created_at))
            key = (r.terminal_id == row.terminal_id) & (r.request_id == row.request_id)
            conn.execute(update(requests).where(key).values(mac=integrity.tag(message)))
    return len(rows)


def unsealed_answers(store: EventStore) -> bool:
    with store.reader.begin() as conn:
        return conn.execute(select(requests.c.request_id).where(requests.c.mac.is_(None)).limit(1)).first() is not None


def seal_terminals(store: EventStore, integrity: IntegrityKeys) -> int:
    """MAC the terminal rows that have none (stored before migration 0009),
    as they are, under the current integrity key; how many. This blesses
    what those rows hold: `pinlife migrate` runs it only in the run that
    adds the column (or when the operator asks, --seal-terminals), never
    on its own later, else anyone who may write the row could clear its MAC
    and have the next deployment seal a reset window."""
    with store.writer.begin() as conn:
        return _mac_terminals(conn, integrity, every=False)


def unsealed_terminals(store: EventStore) -> bool:
    with store.reader.begin() as conn:
        return conn.execute(select(terminals.c.terminal_id).where(terminals.c.mac.is_(None)).limit(1)).first() is not None
