"""terminals.repeats: the repeated refusals and attempts a terminal has
counted but not yet recorded (service/domain/repeats.py), decided in the
write transaction as its failure window is. Existing rows start with none.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("terminals", sa.Column("repeats", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("repeats")
