"""health monitoring and failover: failover domains, blade health samples, failover records

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "state NOT IN ('succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    op.create_table('failover_domains',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('spare_pool', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('restart_attempts', sa.Integer(), nullable=False),
    sa.Column('webhook_url', sa.String(length=2048), nullable=True),
    sa.Column('webhook_secret_enc', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_failover_domains')),
    sa.UniqueConstraint('name', name=op.f('uq_failover_domains_name'))
    )

    op.create_table('blade_health',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('blade_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('power', sa.String(length=16), nullable=True),
    sa.Column('health', sa.String(length=16), nullable=True),
    sa.Column('verdict', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.String(length=512), nullable=False),
    sa.ForeignKeyConstraint(['blade_id'], ['blades.id'], name=op.f('fk_blade_health_blade_id_blades'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blade_health'))
    )
    with op.batch_alter_table('blade_health', schema=None) as batch_op:
        batch_op.create_index('ix_blade_health_blade_id_id', ['blade_id', 'id'], unique=False)

    op.create_table('failovers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('profile', sa.String(length=63), nullable=False),
    sa.Column('domain', sa.String(length=63), nullable=False),
    sa.Column('policy', sa.String(length=8), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('drill', sa.Boolean(), nullable=False),
    sa.Column('from_blade', sa.String(length=63), nullable=True),
    sa.Column('to_blade', sa.String(length=63), nullable=True),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('fence', sa.String(length=16), nullable=True),
    sa.Column('timeline', sa.JSON(), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_failovers_profile_id_profiles'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_failovers'))
    )
    with op.batch_alter_table('failovers', schema=None) as batch_op:
        batch_op.create_index('ix_failovers_domain_id', ['domain', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_failovers_from_blade'), ['from_blade'], unique=False)
        batch_op.create_index(batch_op.f('ix_failovers_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_failovers_state'), ['state'], unique=False)
        # One open failover per profile: two monitors (or a monitor and an admin) cannot
        # start moving the same profile twice.
        batch_op.create_index('uq_failovers_open_profile', ['profile_id'], unique=True,
                              sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))


def downgrade() -> None:
    with op.batch_alter_table('failovers', schema=None) as batch_op:
        batch_op.drop_index('uq_failovers_open_profile', sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
        batch_op.drop_index(batch_op.f('ix_failovers_state'))
        batch_op.drop_index(batch_op.f('ix_failovers_job_id'))
        batch_op.drop_index(batch_op.f('ix_failovers_from_blade'))
        batch_op.drop_index('ix_failovers_domain_id')
    op.drop_table('failovers')
    with op.batch_alter_table('blade_health', schema=None) as batch_op:
        batch_op.drop_index('ix_blade_health_blade_id_id')
    op.drop_table('blade_health')
    op.drop_table('failover_domains')
