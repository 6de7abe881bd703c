"""Table definitions. The schema itself is made by the Alembic migrations in
migrations/versions; tests/store/test_migrations.py checks the two agree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from ..domain.streams import STREAM_ID_LENGTH, TERMINAL_ID_MAX_LENGTH

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")


class _UtcDateTime(TypeDecorator[datetime]):
    """A point in time, stored as its UTC instant: an aware time of another
    zone is converted first (SQLite keeps a time's wall clock, not its
    offset, and what is read back is taken as UTC), a naive one is UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is None or value.utcoffset() == ZERO:
            return value
        return value.astimezone(UTC)


ZERO = timedelta(0)
UtcDateTime = _UtcDateTime()

# One stream per card: its head (version, hash of the last event), and the
# card's part of the projection (status, the holder's ward).
cards = Table(
    "cards",
    metadata,
    Column("card_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("ward", String(32), nullable=True),
    Column("enrolled_at", UtcDateTime, nullable=False),
    # "<integrity key id>:<HMAC>" over the card's whole state and head
    # (service/store/projection.py): checked before the service acts on it.
    Column("mac", String(160), nullable=True),
)

# The append-only log. position is global and gap-free: it is taken from
# log_head inside the appending transaction, whose row lock orders commits
# (see unit_of_work.py). UPDATE and DELETE are refused by triggers.
# stream_id names the stream: a card id, or "terminal:<terminal id>" for a
# terminal's stream (service/domain/streams.py); stream_kind says which.
events = Table(
    "events",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("stream_id", String(STREAM_ID_LENGTH), nullable=False),
    Column("stream_kind", String(16), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("pin_type", String(32), nullable=True),
    Column("channel", String(32), nullable=False),
    Column("terminal_id", String(128), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("payload", Json, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # the integrity key of the chain HMAC (service/domain/chain.py)
    Column("key_id", String(64), nullable=True),
    # the counter's office behind the event (NULL for other callers)
    Column("office", String(64), nullable=True),
    UniqueConstraint("stream_id", "version"),
)
# Audit queries (service/store/audit_reads.py): keyset pages in (occurred_at,
# position) order of the whole log, one terminal's day, one event type's
# hour, one office's day.
Index("ix_events_occurred_at_position", events.c.occurred_at, events.c.position)
Index("ix_events_terminal_id_occurred_at_position", events.c.terminal_id, events.c.occurred_at, events.c.position)
Index("ix_events_event_type_occurred_at_position", events.c.event_type, events.c.occurred_at, events.c.position)
_office = events.c.office.isnot(None)
Index(
    "ix_events_office_occurred_at_position",
    events.c.office,
    events.c.occurred_at,
    events.c.position,
    postgresql_where=_office,
    sqlite_where=_office,
)
# Events not yet keyed (stored before keyed chains, until `pinlife migrate` re-chains them).
_unkeyed = events.c.key_id.is_(None)
Index("ix_events_unkeyed", events.c.position, postgresql_where=_unkeyed, sqlite_where=_unkeyed)

# A row per log: the last position handed out (today's stores hold one log).
log_head = Table(
    "log_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("position", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Log:
    """A log of the store: its own gap-free positions, from its log_head row.
    A store holds one today; a sharded one holds a log per shard, each with
    its own positions and signed checkpoints (DESIGN.md §1)."""

    name: str
    head_id: int


MAIN_LOG = Log("main", 1)

# The lock-state projection: a fold of the events, written in the same
# transaction as the append.
pin_states = Table(
    "pin_states",
    metadata,
    Column("card_id", String(64), primary_key=True),
    Column("pin_type", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("consecutive_failures", Integer, nullable=False),
    Column("remaining_tries", Integer, nullable=False),
    Column("locked_at", UtcDateTime, nullable=True),
    Column("last_version", BigInteger, nullable=False),
    # the PIN's open proxy inquiry and open store reservation, if any
    Column("inquiry_id", String(64), nullable=True),
    Column("inquiry_expires_at", UtcDateTime, nullable=True),
    Column("inquiry_wrong_codes", Integer, nullable=True),
    Column("reservation_id", String(64), nullable=True),
    Column("reservation_proving_pin_type", String(32), nullable=True),
    Column("reservation_expires_at", UtcDateTime, nullable=True),
    # the last Tokyo day (YYYY-MM-DD) with a wrong proxy code for this PIN,
    # and how many that day, across inquiries (the daily bound: guards.py)
    Column("code_day", String(10), nullable=True),
    Column("code_day_wrong_codes", Integer, nullable=True),
)

# Secrets of a card, as keyed hashes (HMAC-SHA256 under a server key that is
# not in the database, service/keys/ring.py): PIN verifiers (kind "pin", name =
# the PIN type), and later one-time codes and tokens, each with its key id.
secrets = Table(
    "secrets",
    metadata,
    Column("card_id", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("set_at_version", BigInteger, nullable=False),
)

# Answers already given, by client request id: a retry replays the answer.
requests = Table(
    "requests",
    metadata,
    Column("terminal_id", String(128), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("card_id", String(64), nullable=False),
    Column("command", String(32), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("outcome", Json, nullable=False),
    Column("stream_version", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # HMAC under the integrity key over the whole answer (projection.py
    # answer_message): an edited answer is never replayed. NULL only in rows
    # kept before migration 0008 until `pinlife migrate` seals them.
    Column("mac", String(80), nullable=True),
)
Index("ix_requests_created_at", requests.c.created_at)  # pruning past the replay window

# Heads of the terminal streams ("terminal:<id>" in events.stream_id), which
# record access refusals and throttling.
terminals = Table(
    "terminals",
    metadata,
    Column("terminal_id", String(TERMINAL_ID_MAX_LENGTH), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    # the terminal's failure window (JSON list of [card id, time]) and
    # throttle, decided in the write transaction (service/domain/throttle.py)
    Column("throttle_failures", Text, nullable=True),
    Column("throttled_until", UtcDateTime, nullable=True),
    # incremented by each write of the row: a batch writes a row it read
    # unlocked only if this is unchanged (service/store/unit_of_work.py)
    Column("revision", BigInteger, nullable=False, server_default="0"),
    # "<integrity key id>:<HMAC>" over the throttle state, the repeats and
    # the head (projection.py terminal_message), written with every write of
    # the row and checked whenever it is loaded: a row without a valid one is
    # never acted on. NULL only in rows from before migration 0009 until
    # `pinlife migrate` seals them.
    Column("mac", String(160), nullable=True),
    # repeated refusals and attempts counted, not yet recorded (JSON: key ->
    # [recorded at, count]; service/domain/repeats.py), decided as the window is
    Column("repeats", Text, nullable=True),
)

# A check value per key id and purpose (service/keys/ring.py): a different key
# under a known id is refused at start instead of failing every PIN.
key_checks = Table(
    "key_checks",
    metadata,
    Column("purpose", String(16), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("check_value", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# Signed checkpoints (service/store/checkpoints.py): the RFC 6962 root over
# the log's first tree_size events, its C2SP signed note, and the Merkle
# frontier the next checkpoint extends (MACed under the integrity key).
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", String(64), nullable=False),
    Column("frontier", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("mac", String(160), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# The roots of the log's perfect Merkle subtrees at every NODE_EVERY-th level
# (4, 8, 12, ...; service/domain/merkle.py): node `idx` at `level` is the root
# of the leaves [idx * 2^level, (idx + 1) * 2^level). Written by the checkpoint
# signer as each subtree completes (never changed: a subtree of an
# append-only log never changes), read to serve inclusion and consistency
# proofs in O(log n) hashes (service/store/tree.py).
tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)
