"""tree_nodes: the roots of the log's perfect Merkle subtrees at every 4th
level, from which inclusion and consistency proofs are served in O(log n)
hashes (service/store/tree.py). The checkpoint signer writes them from now
on; for a store that already holds checkpoints, `pinlife migrate` then
fills in those below its latest checkpoint, in one pass over its events
(service/store/tree.py, fill_nodes).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tree_nodes",
        sa.Column("level", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("idx", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_tree_nodes"),
    )


def downgrade() -> None:
    op.drop_table("tree_nodes")
