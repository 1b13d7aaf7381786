"""BMC event subscriptions: one per event service (endpoint), with the hash of the token
the BMC sends back on every event

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('bmc_event_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.String(length=512), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('destination', sa.String(length=2048), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bmc_event_subscriptions')),
    sa.UniqueConstraint('endpoint', name=op.f('uq_bmc_event_subscriptions_endpoint'))
    )


def downgrade() -> None:
    op.drop_table('bmc_event_subscriptions')
