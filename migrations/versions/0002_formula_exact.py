"""formulas.exact: whether a formula fits its held-out rows exactly.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('formulas', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exact', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('formulas', schema=None) as batch_op:
        batch_op.drop_column('exact')
