"""Blade pools may name a firmware baseline and the policy a stamp from the pool applies it with
(report, refuse or update-first), used when the profile names no baseline of its own

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('blade_pools') as batch:
        batch.add_column(sa.Column('firmware_baseline', sa.String(length=63), nullable=True))
        batch.add_column(sa.Column('firmware_policy', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('blade_pools') as batch:
        batch.drop_column('firmware_policy')
        batch.drop_column('firmware_baseline')
