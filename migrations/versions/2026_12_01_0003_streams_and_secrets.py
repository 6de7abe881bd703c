"""Streams and secrets: events.card_id becomes stream_id (a card id, or
"terminal:<id>"), with a stream_kind column and room for 64-character
terminal ids; indexes for audit queries by terminal and by event type over
time; cards gain the holder's ward (none for existing cards); pin_verifiers
becomes the general secrets table (card, kind, name).

No event's content changes (the hash chain covers neither column name nor
stream_kind). PostgreSQL is altered in place; SQLite, which cannot rename a
constraint, gets the events table rebuilt (its append-only triggers are
dropped with the old table and made again).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)

KIND = "CASE WHEN {col} LIKE 'terminal:%' THEN 'terminal' ELSE 'card' END"
NEW_INDEXES = (
    ("ix_events_terminal_id_occurred_at", ["terminal_id", "occurred_at"]),
    ("ix_events_event_type_occurred_at", ["event_type", "occurred_at"]),
)
SQLITE_APPEND_ONLY = [
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END""",
]
COLUMNS = (
    "position, {stream}, version, event_id, event_type, schema_version, occurred_at, pin_type, channel, "
    "terminal_id, request_id, payload, prev_hash, hash"
)


def _sqlite_events_table(name: str, stream_column: str, width: int, with_kind: bool) -> None:
    columns = [
        sa.Column("position", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column(stream_column, sa.String(width), nullable=False),
    ]
    if with_kind:
        columns.append(sa.Column("stream_kind", sa.String(16), nullable=False))
    columns += [
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("occurred_at", Ts, nullable=False),
        sa.Column("pin_type", sa.String(32), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("terminal_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint(stream_column, "version", name=f"uq_events_{stream_column}_version"),
    ]
    op.create_table(name, *columns)


def _sqlite_rebuild_events(stream_from: str, stream_to: str, width: int, with_kind: bool) -> None:
    """Copy events into a table of the new shape, then swap it in."""
    op.execute("DROP TRIGGER IF EXISTS events_no_update")
    op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    _sqlite_events_table("events_new", stream_to, width, with_kind)
    target = COLUMNS.format(stream=stream_to + (", stream_kind" if with_kind else ""))
    source = COLUMNS.format(stream=stream_from + (", " + KIND.format(col=stream_from) if with_kind else ""))
    op.execute(f"INSERT INTO events_new ({target}) SELECT {source} FROM events")
    op.drop_table("events")
    op.rename_table("events_new", "events")
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    for statement in SQLITE_APPEND_ONLY:
        op.execute(statement)


def _secrets_upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("set_at_version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("card_id", "kind", "name", name="pk_secrets"),
    )
    op.execute(
        "INSERT INTO secrets (card_id, kind, name, key_id, digest, set_at_version) "
        "SELECT card_id, 'pin', pin_type, key_id, digest, set_at_version FROM pin_verifiers"
    )
    op.drop_table("pin_verifiers")


def _secrets_downgrade() -> None:
    op.create_table(
        "pin_verifiers",
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("pin_type", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("set_at_version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("card_id", "pin_type", name="pk_pin_verifiers"),
    )
    op.execute(
        "INSERT INTO pin_verifiers (card_id, pin_type, key_id, digest, set_at_version) "
        "SELECT card_id, name, key_id, digest, set_at_version FROM secrets WHERE kind = 'pin'"
    )
    op.drop_table("secrets")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events RENAME COLUMN card_id TO stream_id")
        op.execute("ALTER TABLE events ALTER COLUMN stream_id TYPE varchar(80)")
        op.execute("ALTER TABLE events RENAME CONSTRAINT uq_events_card_id_version TO uq_events_stream_id_version")
        op.execute("ALTER TABLE events ADD COLUMN stream_kind varchar(16) NOT NULL DEFAULT 'card'")
        # The one write to existing rows: the schema owner labels terminal
        # streams. No hashed field changes.
        op.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        op.execute("UPDATE events SET stream_kind = 'terminal' WHERE stream_id LIKE 'terminal:%'")
        op.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
        op.execute("ALTER TABLE events ALTER COLUMN stream_kind DROP DEFAULT")
    else:
        _sqlite_rebuild_events("card_id", "stream_id", 80, with_kind=True)
    for name, columns in NEW_INDEXES:
        op.create_index(name, "events", columns)
    op.add_column("cards", sa.Column("ward", sa.String(32), nullable=True))
    _secrets_upgrade()


def downgrade() -> None:
    _secrets_downgrade()
    with op.batch_alter_table("cards") as batch:
        batch.drop_column("ward")
    for name, _ in NEW_INDEXES:
        op.drop_index(name, "events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events DROP COLUMN stream_kind")
        op.execute("ALTER TABLE events RENAME CONSTRAINT uq_events_stream_id_version TO uq_events_card_id_version")
        op.execute("ALTER TABLE events RENAME COLUMN stream_id TO card_id")
        op.execute("ALTER TABLE events ALTER COLUMN card_id TYPE varchar(64)")
    else:
        _sqlite_rebuild_events("stream_id", "card_id", 64, with_kind=False)
