"""requests.mac: each kept answer authenticated under the integrity key.

An answer edited in the database (a wrong PIN's answer turned into a
correct one, say) is never replayed to a retry: the command fails with an
integrity error instead (service/store/unit_of_work.py). Rows kept before
this migration have no MAC; `pinlife migrate` seals them with the key file
right after (service/store/rechain.py, seal_answers).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("mac", sa.String(80), nullable=True))


def downgrade() -> None:
    op.drop_column("requests", "mac")
