"""Driver-level SQL for the hot paths: the write path (prefetch and flush of
a unit of work, which also answers status reads) and the projection rebuild.

Profiling the verify path showed SQLAlchemy Core's per-execution work
(building the statement, its cache key, the execution context, per-row
parameter processing) at about 130 us per statement and most of a one-command
transaction's 3 ms. These statements are written once per dialect and run
with `Connection.exec_driver_sql`, which keeps SQLAlchemy's transaction,
error wrapping (IntegrityError, OperationalError, connection invalidation) and
pool, and skips the rest (about 16 us per statement).

Values are converted with the column types' own bind/result processors, so
what is stored is byte for byte what the Core path stores (checked by
tests/store/test_hot_sql.py against the table definitions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect

from service.store.tables import cards, events, pin_states, pin_verifiers, requests

Convert = Callable[[Any], Any]

# Column orders of the rows the unit of work builds (tests check each list
# against its table, so a new column cannot be silently left out).
CARD_COLUMNS = ("card_id", "version", "last_hash", "status", "enrolled_at")
EVENT_COLUMNS = (
    "position", "card_id", "version", "event_id", "event_type", "schema_version", "occurred_at",
    "pin_type", "channel", "terminal_id", "request_id", "payload", "prev_hash", "hash",
)  # fmt: skip
PIN_COLUMNS = ("card_id", "pin_type", "status", "consecutive_failures", "remaining_tries", "locked_at", "last_version")
VERIFIER_COLUMNS = ("card_id", "pin_type", "key_id", "digest", "set_at_version")
REQUEST_COLUMNS = (
    "terminal_id", "request_id", "card_id", "command", "fingerprint", "outcome", "stream_version", "created_at",
)  # fmt: skip


def _identity(value: Any) -> Any:
    return value


class HotSql:
    """The write path's statements and value converters for one dialect."""

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self.pg = dialect.name == "postgresql"
        self._p = "%s" if self.pg else "?"
        p = self._p

        self.insert_cards = self._insert(cards, CARD_COLUMNS)
        self.update_cards = f"UPDATE cards SET version = {p}, last_hash = {p} WHERE card_id = {p}"
        self.take_positions = f"UPDATE log_head SET position = position + {p} WHERE id = 1 RETURNING position"
        self.insert_events = self._insert(events, EVENT_COLUMNS)
        self.upsert_pins = self._upsert(pin_states, PIN_COLUMNS, ("card_id", "pin_type"))
        self.upsert_verifiers = self._upsert(pin_verifiers, VERIFIER_COLUMNS, ("card_id", "pin_type"))
        self.insert_requests = self._insert(requests, REQUEST_COLUMNS)
        # The payload as text (PostgreSQL would parse JSONB per row): equal
        # payloads are then decoded once (EventStore.rebuild caches by text).
        payload = "payload::text" if self.pg else "payload"
        self.rebuild_page = (
            f"SELECT position, card_id, version, event_type, pin_type, {payload}, occurred_at FROM events "
            f"WHERE position > {p} ORDER BY position LIMIT {p}"
        )

        self.bind_time = self._bind(events.c.occurred_at)
        self.bind_json = self._bind(events.c.payload)
        self.read_time = self._result(pin_states.c.locked_at)
        self.read_json = self._result(requests.c.outcome)

    # -- statement text ------------------------------------------------------
    def _insert(self, table: Table, columns: Sequence[str]) -> str:
        marks = ", ".join([self._p] * len(columns))
        return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"

    def _upsert(self, table: Table, columns: Sequence[str], keys: Sequence[str]) -> str:
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        return f"{self._insert(table, columns)} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"

    def among(self, column: str, values: Sequence[str]) -> tuple[str, tuple]:
        """`column IN values` and its parameters: one array parameter on
        PostgreSQL (one prepared statement for every batch size), a list of
        placeholders on SQLite (which probes the index for each)."""
        if self.pg:
            return f"{column} = ANY({self._p})", (list(values),)
        return f"{column} IN ({', '.join([self._p] * len(values))})", tuple(values)

    def lock_heads(self, card_ids: Sequence[str]) -> tuple[str, tuple]:
        """The batch's card heads, locked in card-id order on PostgreSQL
        (SQLite's BEGIN IMMEDIATE already serialises writers)."""
        where, params = self.among("card_id", card_ids)
        lock = " FOR UPDATE" if self.pg else ""
        return f"SELECT card_id, version, last_hash FROM cards WHERE {where} ORDER BY card_id{lock}", params

    def pins_with_verifiers(self, card_ids: Sequence[str]) -> tuple[str, tuple]:
        where, params = self.among("s.card_id", card_ids)
        sql = (
            "SELECT s.card_id, s.pin_type, s.consecutive_failures, s.status, s.locked_at, s.last_version, v.key_id, v.digest "
            "FROM pin_states s LEFT OUTER JOIN pin_verifiers v ON v.card_id = s.card_id AND v.pin_type = s.pin_type "
            f"WHERE {where}"
        )
        return sql, params

    def requests_among(self, terminal_ids: Sequence[str], request_ids: Sequence[str]) -> tuple[str, tuple]:
        """Both primary-key columns constrained, so the lookup probes the
        index (SQLite scans the table for a row-value IN list)."""
        t_where, t_params = self.among("terminal_id", terminal_ids)
        r_where, r_params = self.among("request_id", request_ids)
        columns = "terminal_id, request_id, card_id, command, fingerprint, outcome, stream_version"
        sql = f"SELECT {columns} FROM requests WHERE {t_where} AND {r_where}"
        return sql, t_params + r_params

    # -- converters ------------------------------------------------------------
    def _bind(self, column: Column) -> Convert:
        return column.type.dialect_impl(self.dialect).bind_processor(self.dialect) or _identity

    def _result(self, column: Column) -> Convert:
        return column.type.dialect_impl(self.dialect).result_processor(self.dialect, None) or _identity
