"""Integrity and hardening (issue 12):

- events.key_id: the integrity key the event's chain HMAC was made with
  (NULL only for events chained before keyed chains; `pinlife migrate`
  re-chains them under the integrity key, service/store/rechain.py).
- cards.mac: a MAC over the card's whole projected state and stream head,
  checked before the service acts on it.
- terminals.throttle_failures / throttled_until: a terminal's failure window,
  decided inside the write transaction (service/domain/throttle.py).
- requests.created_at is indexed: answers past the replay window are pruned.
- key_checks: a check value per key id (service/keys/ring.py), so a different key
  under a known id is refused at start.
- checkpoints: signed tree heads (RFC 6962 Merkle root over the log in
  position order, C2SP signed notes) with the Merkle frontier they extend.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("events", sa.Column("key_id", sa.String(64), nullable=True))
    # Events not yet keyed, found without a scan (empty once re-chained).
    unkeyed = sa.text("key_id IS NULL")
    op.create_index("ix_events_unkeyed", "events", ["position"], postgresql_where=unkeyed, sqlite_where=unkeyed)
    op.add_column("cards", sa.Column("mac", sa.String(160), nullable=True))
    op.add_column("terminals", sa.Column("throttle_failures", sa.Text, nullable=True))
    op.add_column("terminals", sa.Column("throttled_until", Ts, nullable=True))
    op.create_index("ix_requests_created_at", "requests", ["created_at"])
    op.create_table(
        "key_checks",
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("check_value", sa.String(64), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.PrimaryKeyConstraint("purpose", "key_id", name="pk_key_checks"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("mac", sa.String(160), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name="pk_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_table("key_checks")
    op.drop_index("ix_requests_created_at", "requests")
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("throttled_until")
        batch.drop_column("throttle_failures")
    with op.batch_alter_table("cards") as batch:
        batch.drop_column("mac")
    op.drop_index("ix_events_unkeyed", "events")
    op.drop_column("events", "key_id")  # SQLite >= 3.35 drops a column in place
