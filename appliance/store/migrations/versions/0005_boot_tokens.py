"""boot services: one-time boot tokens and heartbeat secrets, discovered machines

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 19:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('boot_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('binding_id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['binding_id'], ['bindings.id'], name=op.f('fk_boot_tokens_binding_id_bindings'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_boot_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_boot_tokens_token_hash'))
    )
    with op.batch_alter_table('boot_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_boot_tokens_binding_id'), ['binding_id'], unique=False)

    op.create_table('boot_discoveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=True),
    sa.Column('peer', sa.String(length=64), nullable=True),
    sa.Column('facts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_boot_discoveries')),
    sa.UniqueConstraint('mac', name=op.f('uq_boot_discoveries_mac'))
    )


def downgrade() -> None:
    op.drop_table('boot_discoveries')
    with op.batch_alter_table('boot_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_boot_tokens_binding_id'))
    op.drop_table('boot_tokens')
