"""Reset procedures: a PIN's open proxy inquiry and open convenience-store
reservation are part of the lock-state projection (pin_states). Existing
rows have neither.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Ts = sa.DateTime(timezone=True)
COLUMNS = (
    ("inquiry_id", sa.String(64)),
    ("inquiry_expires_at", Ts),
    ("inquiry_wrong_codes", sa.Integer),
    ("reservation_id", sa.String(64)),
    ("reservation_proving_pin_type", sa.String(32)),
    ("reservation_expires_at", Ts),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("pin_states", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pin_states") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
