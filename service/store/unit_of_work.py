"""The write path: one transaction per batch of commands (service/app/batch.py).

  1. prefetch, in one round trip on PostgreSQL (HotSql.run): lock the head
     rows of the cards the batch writes, in card-id order (SELECT ... FOR
     UPDATE; SQLite's BEGIN IMMEDIATE already serialises writers), then read
     their PIN states and verifiers; read the cards only read (status
     reads) without a lock; read the terminals' rows without a lock (or,
     on a retry, lock them); read any earlier answers to the request ids.
  2. the app layer decides each command against the cached state; appends,
     secrets and answers are buffered in memory.
  3. flush, in two round trips: first claim (_claim) the terminals the
     batch changes (locked, and as read, else WriteConflict and the batch
     is retried) and the global positions (the single log_head row, UPDATE
     ... RETURNING, always the last lock taken), and check that the
     terminals only read are unchanged (on PostgreSQL: on SQLite nothing
     can have changed); link each event to its stream
     under the integrity key (the link covers the position,
     service/domain/chain.py); then write the terminals, the heads with
     each card's MAC, the events, the projection, the secrets and the
     answers; then commit.
A card whose head and projection rows do not match their MAC is never acted
on: loading it raises IntegrityViolation (service/app/ports.py). Nor is a
terminal whose row (throttle state and head) does not match its MAC: every
command of that terminal fails so, whatever its window says.
Steps 1 and 3 run as driver-level SQL (hot_sql.py); rare writes use Core.

Global positions are gap-free and commit in order: the log_head row lock is
held from step 3 until commit, so a transaction that took lower positions has
always committed (and become visible) before a later one can take any. A
reader following the log by position therefore never skips an event that
commits late, on SQLite and on PostgreSQL with many service instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, select

from ..app.ports import Envelope, IntegrityViolation, StoredRequest
from ..domain import repeats as repeats_
from ..domain.chain import GENESIS_HASH, canonical_time, hashed_envelope, link_and_leaf
from ..domain.events import Event, Recorded
from ..domain.pins import PIN_TYPE_BY_VALUE, PinType
from ..domain.state import CardState, evolve
from ..domain.streams import is_card_stream, terminal_stream
from ..domain.throttle import TerminalWindow
from ..keys.ring import IntegrityKeys, SecretKind, SecretRef, Verifier
from ..runtime.ids import new_id as new_event_id
from .errors import WriteConflict
from .hot_sql import HEAD_COLUMNS, HotSql, Statement
from .projection import (
    answer_message,
    card_state,
    changed_pins,
    pin_row,
    state_message,
    terminal_message,
    window_from_row,
    window_to_row,
)
from .records import utc
from .tables import secrets

log = structlog.get_logger()


class UnitOfWork:
    """One transaction (the port service/app/ports.py): cached reads of the
    batch's cards, buffered writes."""

    def __init__(self, conn: Connection, sql: HotSql, integrity: IntegrityKeys, *, lock_terminals: bool = False):
        self._conn = conn
        self._lock_terminals = lock_terminals
        self._sql = sql
        self._integrity = integrity
        self._states: dict[str, CardState] = {}
        self._hashes: dict[str, str] = {}  # stream id (card or terminal stream) -> its last link
        self._existing: set[str] = set()
        self._locked: set[str] = set()  # cards whose head row this transaction holds
        self._secrets: dict[SecretRef, Verifier | None] = {}
        self._pin_verifiers: dict[str, dict[PinType, Verifier | None]] = {}  # card -> its PINs' (the MAC covers them)
        self._requests: dict[tuple[str, str], StoredRequest] = {}
        self._looked_up: set[tuple[str, str]] = set()  # request keys already read (found or not)
        self._new_events: list[tuple[dict[str, Any], datetime]] = []  # envelope, at
        self._dirty_pins: set[tuple[str, PinType]] = set()
        self._new_cards: dict[str, datetime] = {}  # card -> enrolled at
        self._new_secrets: dict[SecretRef, tuple] = {}
        self._new_requests: list[tuple[StoredRequest, datetime]] = []
        # terminal -> [version, TerminalWindow, revision read (None: no row yet), repeats (repeats.py)]
        self._terminals: dict[str, list] = {}
        self._dirty_terminals: set[str] = set()
        self.leaves: list[tuple[int, bytes]] = []  # (position, Merkle leaf hash) of each event written, for checkpoints

    # -- reads -------------------------------------------------------------
    def prefetch(
        self,
        card_ids: Iterable[str],
        request_keys: Iterable[tuple[str, str]] = (),
        read_only: Iterable[str] = (),
        terminal_ids: Iterable[str] = (),
    ) -> None:
        """Load, in one round trip (HotSql.run), the cards the batch writes
        (locking their heads), the cards it only reads (no lock), the
        terminals whose failure windows it decides, and earlier answers to
        its request ids.

        Terminals are read unlocked (most commands leave them as they are):
        flush writes a terminal's row only if it is still as read, else the
        batch fails with WriteConflict and is retried with lock_terminals,
        which makes any missing row (or waits for another transaction
        making it) and locks them all, after the cards. Either way two
        transactions never both move a terminal's window from the same state."""
        sql = self._sql
        write_ids = sorted(set(card_ids) - self._locked)
        read_ids = sorted(set(read_only) - self._states.keys() - set(write_ids))
        terminals = sorted(set(terminal_ids) - self._terminals.keys())
        keys = set(request_keys) - self._looked_up
        plan: dict[str, Statement] = {}
        if write_ids:
            plan["heads"] = sql.locked_heads(write_ids)
            plan["pins"] = sql.pins_with_verifiers(write_ids)
        if read_ids:
            plan["read"] = sql.read_cards(read_ids)
        if terminals and self._lock_terminals:
            plan["new terminals"] = sql.insert_terminals(terminals, GENESIS_HASH, [self._empty_mac(t) for t in terminals])
        if terminals:
            plan["terminals"] = sql.terminals(terminals, lock=self._lock_terminals)
        if keys:
            plan["requests"] = sql.requests_among(sorted({k[0] for k in keys}), sorted({k[1] for k in keys}))
        if not plan:
            return
        rows = sql.run(self._conn, plan)
        if write_ids:
            self._load(write_ids, rows["heads"], rows["pins"])
            self._locked.update(write_ids)
        if read_ids:
            w = len(HEAD_COLUMNS)  # each row: the card's head, then one PIN's columns (NULL: no PIN)
            heads = {r[:w] for r in rows["read"]}
            self._load(read_ids, heads, [(r[0], *r[w:]) for r in rows["read"] if r[w] is not None])
        for t in terminals:
            self._terminals[t] = [0, TerminalWindow(), None, {}]
            self._hashes[terminal_stream(t)] = GENESIS_HASH
        for terminal_id, version, last_hash, failures, until, revision, repeats, mac in rows.get("terminals", ()):
            try:
                window = window_from_row(failures, until, sql.read_time)
                message = terminal_message(terminal_id, version, last_hash, window, repeats)
                authentic = self._integrity.checks(mac, message)
                pending = repeats_.from_json(repeats)
            except (ValueError, TypeError, AttributeError, KeyError):  # a window or repeats that do not even parse
                authentic = False
            if not authentic:
                stream = terminal_stream(terminal_id)
                log.error("integrity_violation", stream=stream, what="terminal MAC")
                raise IntegrityViolation(stream, "its throttle state does not match its MAC")
            self._terminals[terminal_id] = [version, window, revision, pending]
            self._hashes[terminal_stream(terminal_id)] = last_hash
        self._looked_up |= keys
        for terminal_id, request_id, card_id, command, fp, outcome, stream_version, created_at, mac in rows.get("requests", ()):
            if (terminal_id, request_id) in keys:
                kept_at = utc(sql.read_time(created_at))
                answer = StoredRequest(
                    terminal_id, request_id, card_id, command, fp, sql.read_json(outcome), stream_version, kept_at
                )
                if not self._integrity.checks(mac, answer_message(answer, canonical_time(kept_at))):
                    log.error("integrity_violation", stream=card_id, what="kept answer MAC", request_id=request_id)
                    raise IntegrityViolation(card_id, f"the answer kept for request {request_id} does not match its MAC")
                self._requests[(terminal_id, request_id)] = answer

    def _load(self, ids: list[str], heads: Iterable[Sequence[Any]], pin_rows: Iterable[Sequence[Any]]) -> None:
        """Cards from their heads and PIN rows (with verifiers), each checked against its MAC."""
        sql = self._sql
        pins: dict[str, list[Sequence[Any]]] = {card_id: [] for card_id in ids}
        for card_id in ids:
            self._pin_verifiers[card_id] = {}
        for card_id, *columns, key_id, digest in pin_rows:
            pins[card_id].append(columns)
            verifier = None if key_id is None else Verifier(key_id, digest)
            self._secrets[SecretRef(card_id, SecretKind.PIN, columns[0])] = verifier
            self._pin_verifiers[card_id][PIN_TYPE_BY_VALUE[columns[0]]] = verifier
        for card_id in ids:
            self._states[card_id] = CardState(card_id)
            self._hashes[card_id] = GENESIS_HASH
        for card_id, version, last_hash, status, ward, mac in heads:
            state = card_state(card_id, version, status, ward, pins[card_id], sql.read_time)
            if not self._integrity.checks(mac, state_message(state, last_hash, self._verifiers(state))):
                log.error("integrity_violation", stream=card_id, what="card MAC")
                raise IntegrityViolation(card_id, "its head and PIN states do not match their MAC")
            self._states[card_id] = state
            self._hashes[card_id] = last_hash
            self._existing.add(card_id)

    def terminal_window(self, terminal_id: str) -> TerminalWindow:
        if terminal_id not in self._terminals:
            self.prefetch((), terminal_ids=[terminal_id])
        return self._terminals[terminal_id][1]

    def set_terminal_window(self, terminal_id: str, window: TerminalWindow) -> None:
        self.terminal_window(terminal_id)
        self._terminals[terminal_id][1] = window
        self._dirty_terminals.add(terminal_id)

    def terminal_repeats(self, terminal_id: str) -> repeats_.Repeats:
        self.terminal_window(terminal_id)
        return self._terminals[terminal_id][3]

    def set_terminal_repeats(self, terminal_id: str, repeats: repeats_.Repeats) -> None:
        self.terminal_window(terminal_id)
        self._terminals[terminal_id][3] = repeats
        self._dirty_terminals.add(terminal_id)

    def card(self, card_id: str) -> CardState:
        if card_id not in self._locked:
            self.prefetch([card_id])
        return self._states[card_id]

    def read_card(self, card_id: str) -> CardState:
        """A card as this transaction sees it, without locking its head."""
        if card_id not in self._states:
            self.prefetch((), read_only=[card_id])
        return self._states[card_id]

    def secret(self, ref: SecretRef) -> Verifier | None:
        if ref not in self._secrets:
            if ref.kind == SecretKind.PIN:
                self.card(ref.card_id)  # PIN verifiers come with the card
            else:
                q = select(secrets.c.key_id, secrets.c.digest).where(
                    secrets.c.card_id == ref.card_id, secrets.c.kind == ref.kind, secrets.c.name == ref.name
                )
                row = self._conn.execute(q).one_or_none()
                self._secrets[ref] = None if row is None else Verifier(row.key_id, row.digest)
        return self._secrets.get(ref)

    def request(self, terminal_id: str, request_id: str) -> StoredRequest | None:
        key = (terminal_id, request_id)
        if key not in self._looked_up:
            self.prefetch((), [key])
        return self._requests.get(key)

    # -- buffered writes ---------------------------------------------------
    def _stage(self, stream_id: str, version: int, e: Event, env: Envelope) -> None:
        """Buffer one event at the given stream version (linked at flush,
        when its position is known)."""
        pin_type = getattr(e, "pin_type", None)
        envelope = hashed_envelope(
            stream_id,
            version,
            new_event_id(),
            e.type_name,
            e.schema_version,
            env.occurred_at,
            pin_type.value if pin_type else None,
            env.channel,
            env.terminal_id,
            env.request_id,
            e.payload(),
            env.office,
        )
        self._new_events.append((envelope, env.occurred_at))

    def append(self, card_id: str, new_events: Sequence[Event], env: Envelope) -> CardState:
        """Append events to a card's stream; returns the evolved state."""
        env = replace(env, occurred_at=utc(env.occurred_at))  # stored as UTC on every backend
        state = before = self.card(card_id)
        for e in new_events:
            self._stage(card_id, state.version + 1, e, env)
            state = evolve(state, Recorded(e, state.version + 1, env.occurred_at))
        self._dirty_pins.update((card_id, t) for t in changed_pins(before, state))
        if card_id not in self._existing and card_id not in self._new_cards:
            self._new_cards[card_id] = env.occurred_at
        self._states[card_id] = state
        return state

    def append_terminal(self, terminal_id: str, new_events: Sequence[Event], env: Envelope) -> int:
        """Append access events to a terminal's stream; returns its version."""
        env = replace(env, occurred_at=utc(env.occurred_at))
        self.terminal_window(terminal_id)
        head = self._terminals[terminal_id]
        for e in new_events:
            head[0] += 1
            self._stage(terminal_stream(terminal_id), head[0], e, env)
        self._dirty_terminals.add(terminal_id)
        return head[0]

    def set_secret(self, ref: SecretRef, verifier: Verifier) -> None:
        self._secrets[ref] = verifier
        if ref.kind == SecretKind.PIN:
            self._pin_verifiers.setdefault(ref.card_id, {})[PIN_TYPE_BY_VALUE[ref.name]] = verifier
        self._new_secrets[ref] = (
            ref.card_id,
            ref.kind,
            ref.name,
            verifier.key_id,
            verifier.digest,
            self._states[ref.card_id].version,
        )

    def remember(self, answer: StoredRequest, at: datetime) -> None:
        self._requests[(answer.terminal_id, answer.request_id)] = answer
        self._new_requests.append((answer, utc(at)))

    def _claim(self) -> int:
        """Before anything is written, in one round trip: lock the terminals
        this batch changes and check they are as read, make the rows of new
        ones, take the batch's global positions (the log_head row, locked to
        commit: always last, so lock waits never form a cycle through it),
        then check that the terminals only read are still as read (every
        transaction that took positions before has committed by now).
        Raises WriteConflict (or IntegrityError for a row made meanwhile);
        returns the first position (0 without events). On SQLite nothing is
        checked: BEGIN IMMEDIATE took the database's write lock before the
        batch read anything, so no one else has written since."""
        sql, plan = self._sql, {}
        made = sorted(t for t in self._dirty_terminals if self._terminals[t][2] is None)
        changed, read = [], []
        if sql.pg:
            changed = sorted(t for t in self._dirty_terminals if self._terminals[t][2] is not None)
            read = sorted(self._terminals.keys() - self._dirty_terminals) if self._new_events else []
        if changed:
            plan["changed"] = sql.terminals(changed, lock=True)
        if made:
            plan["made"] = Statement(
                sql.insert_terminal, [(t, 0, GENESIS_HASH, None, None, 0, None, self._empty_mac(t)) for t in made], many=True
            )
        if self._new_events:
            plan["positions"] = Statement(sql.take_positions, (len(self._new_events),))
        if read:
            plan["read"] = sql.terminals(read, lock=False)
        if not plan:
            return 0
        rows = sql.run(self._conn, plan)
        for name, ids in (("changed", changed), ("read", read)):
            now = {r[0]: r[5] for r in rows.get(name, ())}
            if moved := [t for t in ids if now.get(t) != self._terminals[t][2]]:
                raise WriteConflict(f"terminal rows changed since read: {len(moved)}")
        for t in made:
            self._terminals[t][2] = 0
        return rows["positions"][0][0] - len(self._new_events) + 1 if self._new_events else 0

    def _link(self, first: int) -> list[tuple]:
        """Link each new event to its stream under the current integrity key,
        from the first position taken; the events' rows."""
        sql, hashes = self._sql, self._hashes
        key_id = self._integrity.current
        key = self._integrity.key(key_id)
        rows = []
        for position, (env, at) in enumerate(self._new_events, first):
            sid = env["card_id"]
            prev = hashes[sid]
            link, leaf = link_and_leaf(key, prev, position, env)
            hashes[sid] = link
            self.leaves.append((position, leaf))
            rows.append(sql.event_row(position, env, at, prev, link, key_id))
        return rows

    def _verifiers(self, state: CardState) -> dict[PinType, Verifier | None]:
        return self._pin_verifiers.get(state.card_id, {})

    def _empty_mac(self, terminal_id: str) -> str:
        """The MAC of a terminal's row as first made: no events, no failures."""
        return self._integrity.tag(terminal_message(terminal_id, 0, GENESIS_HASH, TerminalWindow()))

    def _terminal_row(self, terminal_id: str, bind_time: Any) -> tuple:
        """A terminal's row as update_terminal takes it: head, throttle state,
        repeats, MAC, then id and revision read."""
        version, window, revision, pending = self._terminals[terminal_id]
        last_hash = self._hashes[terminal_stream(terminal_id)]
        repeats = repeats_.to_json(pending)
        mac = self._integrity.tag(terminal_message(terminal_id, version, last_hash, window, repeats))
        return (version, last_hash, *window_to_row(window, bind_time), repeats, mac, terminal_id, revision)

    def _mac(self, card_id: str) -> str:
        state = self._states[card_id]
        return self._integrity.tag(state_message(state, self._hashes[card_id], self._verifiers(state)))

    def flush(self) -> None:
        """Write everything buffered. The terminals and positions are claimed
        first (_claim; the links cover the positions, and the heads and MACs
        cover the links); then every write in one round trip (HotSql.run),
        in this order."""
        sql = self._sql
        bind_time, bind_json = sql.bind_time, sql.bind_json
        plan: dict[str, Statement] = {}
        first = self._claim()
        event_rows = self._link(first) if self._new_events else []
        if self._new_cards:
            plan["cards"] = Statement(
                sql.insert_cards,
                [
                    (c, s.version, self._hashes[c], s.status.value, s.ward, bind_time(at), self._mac(c))
                    for c, at in self._new_cards.items()
                    for s in (self._states[c],)
                ],
                many=True,
            )
        if self._dirty_terminals:  # locked by _claim, as read
            plan["terminals"] = Statement(
                sql.update_terminal,
                [self._terminal_row(t, bind_time) for t in sorted(self._dirty_terminals)],
                many=True,
                expect=len(self._dirty_terminals),
            )
        touched = {env["card_id"] for env, _ in self._new_events if is_card_stream(env["card_id"])}
        touched |= {ref.card_id for ref in self._new_secrets if ref.kind == SecretKind.PIN}  # the MAC covers verifiers
        touched -= self._new_cards.keys()
        if touched:
            plan["heads"] = Statement(
                sql.update_cards,
                [
                    (s.version, self._hashes[c], s.status.value, self._mac(c), c)
                    for c in sorted(touched)
                    for s in (self._states[c],)
                ],
                many=True,
            )
        if event_rows:
            plan["events"] = Statement(sql.insert_events, event_rows, many=True)
        if self._dirty_pins:
            pins = [pin_row(c, self._states[c], t, bind_time) for c, t in sorted(self._dirty_pins, key=str)]
            plan["pins"] = Statement(sql.upsert_pins, pins, many=True)
        if self._new_secrets:
            plan["secrets"] = Statement(sql.upsert_secrets, list(self._new_secrets.values()), many=True)
        if self._new_requests:
            tag, times = self._integrity.tag, {at: canonical_time(at) for at in {at for _, at in self._new_requests}}
            plan["answers"] = Statement(
                sql.insert_requests,
                [
                    (
                        a.terminal_id,
                        a.request_id,
                        a.card_id,
                        a.command,
                        a.fingerprint,
                        bind_json(a.outcome),
                        a.stream_version,
                        bind_time(at),
                        tag(answer_message(a, times[at])),
                    )
                    for a, at in self._new_requests
                ],
                many=True,
            )
        if plan:
            sql.run(self._conn, plan)
