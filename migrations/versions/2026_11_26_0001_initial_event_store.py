"""Initial event store: cards, events (append-only), log head, lock-state
projection, PIN verifiers, request log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)

PG_APPEND_ONLY = """
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'events are append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
  FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
"""

SQLITE_APPEND_ONLY = [
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END""",
]


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("enrolled_at", Ts, nullable=False),
        sa.PrimaryKeyConstraint("card_id", name="pk_cards"),
    )
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("card_id", sa.String(64), nullable=False),
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
        sa.UniqueConstraint("card_id", "version", name="uq_events_card_id_version"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log_head"),
    )
    op.execute("INSERT INTO log_head (id, position) VALUES (1, 0)")
    op.create_table(
        "pin_states",
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("pin_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("remaining_tries", sa.Integer, nullable=False),
        sa.Column("locked_at", Ts, nullable=True),
        sa.Column("last_version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("card_id", "pin_type", name="pk_pin_states"),
    )
    op.create_table(
        "pin_verifiers",
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("pin_type", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("set_at_version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("card_id", "pin_type", name="pk_pin_verifiers"),
    )
    op.create_table(
        "requests",
        sa.Column("terminal_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outcome", Json, nullable=False),
        sa.Column("stream_version", sa.BigInteger, nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.PrimaryKeyConstraint("terminal_id", "request_id", name="pk_requests"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_APPEND_ONLY)
    else:
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_no_update_delete ON events")
        op.execute("DROP FUNCTION IF EXISTS events_append_only()")
    for table in ("requests", "pin_verifiers", "pin_states", "log_head", "events", "cards"):
        op.drop_table(table)
