"""Driver-level SQL for the hot paths: the write path (prefetch and flush of
a unit of work, which also answers status reads) and the projection rebuild.

These statements are written once per dialect and run with
`Connection.exec_driver_sql`, which keeps SQLAlchemy's transaction, error
wrapping (IntegrityError, OperationalError, connection invalidation) and
pool, and skips Core's per-statement work (why: docs/performance.md).

Values are converted with the column types' own bind/result processors, so
what is stored is byte for byte what the Core path stores (checked by
tests/store/test_hot_sql.py against the table definitions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import Column, Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ..domain.streams import stream_kind
from .errors import WriteConflict
from .tables import MAIN_LOG, Log, cards, events, pin_states, requests, secrets, terminals

if TYPE_CHECKING:
    import psycopg  # the driver is the dialect's (psycopg is not loaded for a SQLite store)

Convert = Callable[[Any], Any]

# Column orders of the rows the unit of work builds (tests check each list
# against its table, so a new column cannot be silently left out).
CARD_COLUMNS = ("card_id", "version", "last_hash", "status", "ward", "enrolled_at", "mac")
EVENT_COLUMNS = (
    "position",
    "stream_id",
    "stream_kind",
    "version",
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "pin_type",
    "channel",
    "terminal_id",
    "request_id",
    "payload",
    "prev_hash",
    "hash",
    "key_id",
    "office",
)
PIN_COLUMNS = (
    "card_id",
    "pin_type",
    "status",
    "consecutive_failures",
    "remaining_tries",
    "locked_at",
    "last_version",
    "inquiry_id",
    "inquiry_expires_at",
    "inquiry_wrong_codes",
    "reservation_id",
    "reservation_proving_pin_type",
    "reservation_expires_at",
    "code_day",
    "code_day_wrong_codes",
)
SECRET_COLUMNS = ("card_id", "kind", "name", "key_id", "digest", "set_at_version")
TERMINAL_COLUMNS = (
    "terminal_id",
    "version",
    "last_hash",
    "throttle_failures",
    "throttled_until",
    "revision",
    "repeats",
    "mac",
)
REQUEST_COLUMNS = (
    "terminal_id",
    "request_id",
    "card_id",
    "command",
    "fingerprint",
    "outcome",
    "stream_version",
    "created_at",
    "mac",
)


# What the write path reads of a card: its head, and each PIN's row with its verifier.
HEAD_COLUMNS = ("card_id", "version", "last_hash", "status", "ward", "mac")
_HEAD = ", ".join(HEAD_COLUMNS)
_PIN = (
    "s.pin_type, s.consecutive_failures, s.status, s.locked_at, s.last_version, "
    "s.inquiry_id, s.inquiry_expires_at, s.inquiry_wrong_codes, "
    "s.reservation_id, s.reservation_proving_pin_type, s.reservation_expires_at, s.code_day, s.code_day_wrong_codes, "
    "v.key_id, v.digest"
)
_VERIFIER = "LEFT OUTER JOIN secrets v ON v.card_id = s.card_id AND v.kind = 'pin' AND v.name = s.pin_type"


def _as_expected(name: str, expect: int | None, rowcount: int) -> None:
    if expect is not None and rowcount != expect:
        raise WriteConflict(f"{name}: {rowcount} of {expect} rows as read")


def _identity(value: Any) -> Any:
    return value


class Statement(NamedTuple):
    """One statement of a round trip (HotSql.run): its text and parameters,
    or a list of parameter rows with many=True; for a write that must
    change a given number of rows, that number (else WriteConflict)."""

    sql: str
    params: Any = ()
    many: bool = False
    expect: int | None = None


class HotSql:
    """The write path's statements and value converters for one dialect."""

    def __init__(self, dialect: Dialect, log: Log = MAIN_LOG):
        self.dialect = dialect
        self.pg = dialect.name == "postgresql"
        self._p = "%s" if self.pg else "?"
        p = self._p

        self.insert_cards = self._insert(cards, CARD_COLUMNS)
        self.update_cards = f"UPDATE cards SET version = {p}, last_hash = {p}, status = {p}, mac = {p} WHERE card_id = {p}"
        self.take_positions = f"UPDATE log_head SET position = position + {p} WHERE id = {log.head_id} RETURNING position"
        self.insert_events = self._insert(events, EVENT_COLUMNS)
        self.upsert_pins = self._upsert(pin_states, PIN_COLUMNS, ("card_id", "pin_type"))
        self.upsert_secrets = self._upsert(secrets, SECRET_COLUMNS, ("card_id", "kind", "name"))
        self.insert_requests = self._insert(requests, REQUEST_COLUMNS)
        self.insert_terminal = self._insert(terminals, TERMINAL_COLUMNS)
        # a row read at the revision given (last parameter), or no row changes
        self.update_terminal = (
            f"UPDATE terminals SET version = {p}, last_hash = {p}, throttle_failures = {p}, throttled_until = {p}, "
            f"repeats = {p}, mac = {p}, revision = revision + 1 WHERE terminal_id = {p} AND revision = {p}"
        )
        # The rebuild's page: the events after a (stream, version), in stream
        # order, from the (stream_id, version) index. The payload as text
        # (PostgreSQL would parse JSONB per row): equal payloads are then
        # decoded once (CardReader.rebuilt caches by text).
        payload = "payload::text" if self.pg else "payload"
        self.rebuild_page = (
            f"SELECT stream_id, version, event_type, schema_version, pin_type, {payload}, occurred_at FROM events "
            f"WHERE (stream_id, version) > ({p}, {p}) ORDER BY stream_id, version LIMIT {p}"
        )

        self.bind_time = self._bind(events.c.occurred_at)
        self.bind_json = self._bind(events.c.payload)
        self.read_time = self._result(pin_states.c.locked_at)
        self.read_json = self._result(requests.c.outcome)

    def event_row(self, position: int, env: Mapping[str, Any], at: Any, prev: str, link: str, key_id: str) -> tuple:
        """An event's row, in EVENT_COLUMNS order: its envelope at its
        position, with its stream's previous link and its own."""
        sid = env["card_id"]
        return (
            position,
            sid,
            stream_kind(sid).value,
            env["version"],
            env["event_id"],
            env["event_type"],
            env["schema_version"],
            self.bind_time(at),
            env["pin_type"],
            env["channel"],
            env["terminal_id"],
            env["request_id"],
            self.bind_json(env["payload"]),
            prev,
            link,
            key_id,
            env.get("office"),
        )

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

    def locked_heads(self, card_ids: Sequence[str]) -> Statement:
        """Heads of the cards a batch writes, locked in card-id order on
        PostgreSQL (SQLite's BEGIN IMMEDIATE already serialises writers).
        Their PINs are read after (pins_with_verifiers): a row read in the
        same statement as a lock could be a version older than the one locked."""
        where, params = self.among("card_id", card_ids)
        suffix = " ORDER BY card_id FOR UPDATE" if self.pg else ""
        return Statement(f"SELECT {_HEAD} FROM cards WHERE {where}{suffix}", params)

    def read_cards(self, card_ids: Sequence[str]) -> Statement:
        """Cards only read (status reads), not locked, so no writer waits:
        each head with its PINs in one statement, hence one snapshot (a head
        and PINs read by two statements could straddle another instance's
        commit and fail their MAC). One row per PIN: HEAD_COLUMNS, then as
        pins_with_verifiers after card_id; a card without PINs gives one row
        with NULLs after its head."""
        where, params = self.among("c.card_id", card_ids)
        head = ", ".join(f"c.{c}" for c in HEAD_COLUMNS)
        sql = (
            f"SELECT {head}, {_PIN} FROM cards c LEFT OUTER JOIN pin_states s ON s.card_id = c.card_id {_VERIFIER} WHERE {where}"
        )
        return Statement(sql, params)

    def pins_with_verifiers(self, card_ids: Sequence[str]) -> Statement:
        """Projection rows of the cards with each PIN's verifier (a secret of
        kind "pin"): card_id, then PIN_READ_COLUMNS, key_id, digest."""
        where, params = self.among("s.card_id", card_ids)
        return Statement(f"SELECT s.card_id, {_PIN} FROM pin_states s {_VERIFIER} WHERE {where}", params)

    def terminals(self, terminal_ids: Sequence[str], *, lock: bool) -> Statement:
        """Terminal rows (TERMINAL_COLUMNS); with lock, locked in id order on PostgreSQL."""
        where, params = self.among("terminal_id", terminal_ids)
        suffix = " ORDER BY terminal_id FOR UPDATE" if lock and self.pg else ""
        return Statement(f"SELECT {', '.join(TERMINAL_COLUMNS)} FROM terminals WHERE {where}{suffix}", params)

    def insert_terminals(self, terminal_ids: Sequence[str], genesis: str, macs: Sequence[str]) -> Statement:
        """Rows for the terminals not seen before, in id order, each with
        its MAC (macs, in the order of terminal_ids: of the empty state); a
        terminal that has its row already (or whose row another transaction
        is inserting: waited for) is left as it is. terminals(lock=True)
        then locks them all."""
        if self.pg:
            return Statement(
                "INSERT INTO terminals (terminal_id, version, last_hash, mac) "
                "SELECT t, 0, %s, m FROM unnest(%s::text[], %s::text[]) AS u(t, m) ORDER BY t "
                "ON CONFLICT (terminal_id) DO NOTHING",
                (genesis, list(terminal_ids), list(macs)),
            )
        rows = ", ".join(["(?, 0, ?, ?)"] * len(terminal_ids))
        params = tuple(v for t, m in zip(terminal_ids, macs) for v in (t, genesis, m))
        return Statement(
            f"INSERT INTO terminals (terminal_id, version, last_hash, mac) VALUES {rows} ON CONFLICT (terminal_id) DO NOTHING",
            params,
        )

    def requests_among(self, terminal_ids: Sequence[str], request_ids: Sequence[str]) -> Statement:
        """Both primary-key columns constrained, so the lookup probes the
        index (SQLite scans the table for a row-value IN list)."""
        t_where, t_params = self.among("terminal_id", terminal_ids)
        r_where, r_params = self.among("request_id", request_ids)
        columns = ", ".join(REQUEST_COLUMNS)
        sql = f"SELECT {columns} FROM requests WHERE {t_where} AND {r_where}"
        return Statement(sql, t_params + r_params)

    # -- running -----------------------------------------------------------------
    def run(self, conn: Connection, statements: Mapping[str, Statement]) -> dict[str, Sequence[Any]]:
        """Run the statements in order in the connection's transaction; each
        one's rows by name (none for a write). PostgreSQL: in one round trip
        (a psycopg pipeline: each statement still sees what the ones before
        it did and locked); SQLite: one after another."""
        if not self.pg:
            return self._run_sqlite(conn, statements)
        pg = cast("psycopg.Connection", conn.connection.driver_connection)
        driver_error = self.dialect.loaded_dbapi.Error  # psycopg.Error
        cursors = {}
        try:
            with pg.pipeline():
                for name, (sql, params, many, _expect) in statements.items():
                    cursor = pg.cursor()
                    (cursor.executemany if many else cursor.execute)(sql, params)
                    cursors[name] = cursor
        except driver_error as exc:  # as SQLAlchemy would have raised it (errors.py classifies those)
            if pg.broken:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                f"pipeline: {', '.join(statements)}", None, exc, driver_error, hide_parameters=True, dialect=self.dialect
            ) from exc
        for name, statement in statements.items():
            _as_expected(name, statement.expect, cursors[name].rowcount)
        return {name: cursor.fetchall() if cursor.description else [] for name, cursor in cursors.items()}

    def _run_sqlite(self, conn: Connection, statements: Mapping[str, Statement]) -> dict[str, Sequence[Any]]:
        """One after another on the driver's cursor (rows as plain tuples),
        errors raised as SQLAlchemy would have raised them."""
        db = cast(sqlite3.Connection, conn.connection.driver_connection)
        out: dict[str, Sequence[Any]] = {}
        cursor = db.cursor()
        try:
            for name, (sql, params, many, expect) in statements.items():
                try:
                    (cursor.executemany if many else cursor.execute)(sql, params)
                    out[name] = cursor.fetchall() if cursor.description else []
                except sqlite3.Error as exc:
                    raise DBAPIError.instance(name, None, exc, sqlite3.Error, hide_parameters=True, dialect=self.dialect) from exc
                _as_expected(name, expect, cursor.rowcount)
        finally:
            cursor.close()
        return out

    # -- converters ------------------------------------------------------------
    def _bind(self, column: Column) -> Convert:
        return column.type.dialect_impl(self.dialect).bind_processor(self.dialect) or _identity

    def _result(self, column: Column) -> Convert:
        return column.type.dialect_impl(self.dialect).result_processor(self.dialect, None) or _identity
