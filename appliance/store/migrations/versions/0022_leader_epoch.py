"""engine leader fencing token: ``epoch`` grows by one at every change of leader, and every
step commit checks it, so a leader that lost its lease cannot commit after its successor

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-12 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0022'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('engine_leader') as batch:
        batch.add_column(sa.Column('epoch', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('engine_leader') as batch:
        batch.drop_column('epoch')
