"""terminals.revision: a counter each write of a terminal's row increments.

A batch reads its terminals' rows without locking them and writes one only
if its revision is still the one it read (else the batch is retried, then
with the rows locked): service/store/unit_of_work.py. Existing rows start
at 0.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("terminals", sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("terminals", "revision")
