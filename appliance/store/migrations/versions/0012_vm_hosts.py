"""VM hosts (libvirt hosts whose domains are blades), a blade pool's placement preference
(physical first by default), and the VM hosts a failover domain may use as last-resort spares

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'vm_hosts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('uri', sa.String(length=1024), nullable=False),
        sa.Column('bridge', sa.String(length=15), nullable=False),
        sa.Column('bridge_type', sa.String(length=8), nullable=False),
        sa.Column('slots', sa.Integer(), nullable=False),
        sa.Column('cpus', sa.Integer(), nullable=False),
        sa.Column('memory_mib', sa.Integer(), nullable=False),
        sa.Column('nics', sa.Integer(), nullable=False),
        sa.Column('accel', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_vm_hosts')),
        sa.UniqueConstraint('name', name=op.f('uq_vm_hosts_name')),
    )
    op.add_column('blade_pools', sa.Column('prefer', sa.String(length=8), nullable=False,
                                           server_default='physical'))
    op.add_column('failover_domains', sa.Column('vm_hosts', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('failover_domains') as batch:
        batch.drop_column('vm_hosts')
    with op.batch_alter_table('blade_pools') as batch:
        batch.drop_column('prefer')
    op.drop_table('vm_hosts')
