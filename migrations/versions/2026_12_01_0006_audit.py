"""Audit (issue 13):

- events.office: the counter's office behind an event (NULL for every other
  caller and for events stored before this revision; the chain covers it
  when set, service/store/records.py).
- The audit indexes end with the position, so a page of one terminal's
  day, one event type's hour or one office's day is an ordered index range
  read ((key, occurred_at, position) keyset pages), not a sort of the range.
- PostgreSQL: every commit that moves the log head notifies channel
  `pinlife_log` with the new head (a trigger on log_head, one per batch), so
  WatchEvents wakes on commits of any instance without polling.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NOTIFY_FUNCTION = """
CREATE FUNCTION log_head_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('pinlife_log', NEW.position::text);
  RETURN NULL;
END $$
"""
NOTIFY_TRIGGER = "CREATE TRIGGER log_head_notify AFTER UPDATE ON log_head FOR EACH ROW EXECUTE FUNCTION log_head_notify()"

OFFICE = sa.text("office IS NOT NULL")


def upgrade() -> None:
    op.add_column("events", sa.Column("office", sa.String(64), nullable=True))
    op.drop_index("ix_events_occurred_at", "events")
    op.drop_index("ix_events_terminal_id_occurred_at", "events")
    op.drop_index("ix_events_event_type_occurred_at", "events")
    op.create_index("ix_events_occurred_at_position", "events", ["occurred_at", "position"])
    op.create_index("ix_events_terminal_id_occurred_at_position", "events", ["terminal_id", "occurred_at", "position"])
    op.create_index("ix_events_event_type_occurred_at_position", "events", ["event_type", "occurred_at", "position"])
    op.create_index(
        "ix_events_office_occurred_at_position",
        "events",
        ["office", "occurred_at", "position"],
        postgresql_where=OFFICE,
        sqlite_where=OFFICE,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS log_head_notify ON log_head")
        op.execute("DROP FUNCTION IF EXISTS log_head_notify()")
    op.drop_index("ix_events_office_occurred_at_position", "events")
    op.drop_index("ix_events_event_type_occurred_at_position", "events")
    op.drop_index("ix_events_terminal_id_occurred_at_position", "events")
    op.drop_index("ix_events_occurred_at_position", "events")
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_index("ix_events_terminal_id_occurred_at", "events", ["terminal_id", "occurred_at"])
    op.create_index("ix_events_event_type_occurred_at", "events", ["event_type", "occurred_at"])
    op.drop_column("events", "office")
