"""pin_states.code_day, code_day_wrong_codes: the wrong proxy codes a PIN
took on its last Tokyo day with one, across inquiries (the daily bound on
wrong codes, service/domain/guards.py proxy_codes_exhausted). Part of the
lock-state projection: the fold of the card's ProxyInquiryCodeRejected
events from schema v2 on, which carry the day's count (v1 events, recorded
before, count nothing: the fold of every existing stream leaves these
columns NULL, as the migration does). A card's MAC covers them only when
set, so every MAC made before stays valid.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = (("code_day", sa.String(10)), ("code_day_wrong_codes", sa.Integer))


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("pin_states", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pin_states") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
