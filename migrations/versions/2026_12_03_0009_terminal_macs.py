"""terminals.mac: each terminal's throttle state authenticated under the
integrity key.

The service's own role may update `terminals`; without a MAC, anyone
holding that credential could reset a terminal's failure window and let it
fail on any number of cards. With it, a terminal whose row does not
authenticate is refused (service/store/unit_of_work.py) and named by
`pinlife check`. Rows written before this migration have no MAC: the
`pinlife migrate` run that applies this migration seals them, as they are,
with the key file right after (service/store/rechain.py, seal_terminals);
a row left without one refuses its terminal until an operator seals it
(`pinlife migrate --seal-terminals`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("terminals", sa.Column("mac", sa.String(160), nullable=True))


def downgrade() -> None:
    op.drop_column("terminals", "mac")
