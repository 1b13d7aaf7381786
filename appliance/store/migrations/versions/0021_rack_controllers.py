"""Rack controllers (boot roles registered with the region, each serving its own blades) and the
rack a blade is cabled to

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0021'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'racks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('networks', sa.JSON(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=True),
        sa.Column('boot_url', sa.String(length=255), nullable=True),
        sa.Column('reported_networks', sa.JSON(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_racks')),
        sa.UniqueConstraint('name', name=op.f('uq_racks_name')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_racks_token_hash')),
    )
    with op.batch_alter_table('blades') as batch:
        batch.add_column(sa.Column('rack_id', sa.Integer(), nullable=True))
        batch.create_index(batch.f('ix_blades_rack_id'), ['rack_id'])
        batch.create_foreign_key(batch.f('fk_blades_rack_id_racks'), 'racks', ['rack_id'], ['id'],
                                 ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('blades') as batch:
        batch.drop_constraint(batch.f('fk_blades_rack_id_racks'), type_='foreignkey')
        batch.drop_index(batch.f('ix_blades_rack_id'))
        batch.drop_column('rack_id')
    op.drop_table('racks')
