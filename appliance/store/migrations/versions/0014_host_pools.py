"""host pools for VM managers: pools, their hosts, the event feed, webhooks and their delivery
log, host metrics, SLA decisions and tenant quotas

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('host_pools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('template', sa.String(length=63), nullable=False),
    sa.Column('blade_pool', sa.String(length=63), nullable=False),
    sa.Column('min_size', sa.Integer(), nullable=False),
    sa.Column('max_size', sa.Integer(), nullable=False),
    sa.Column('desired', sa.Integer(), nullable=False),
    sa.Column('spread', sa.String(length=16), nullable=False),
    sa.Column('keep_profiles', sa.Boolean(), nullable=False),
    sa.Column('next_seq', sa.Integer(), nullable=False),
    sa.Column('policy', sa.JSON(), nullable=True),
    sa.Column('policy_state', sa.JSON(), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('backoff_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('waiting', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_pools')),
    sa.UniqueConstraint('tenant', 'name', name=op.f('uq_host_pools_tenant_name'))
    )
    op.create_table('host_quotas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('max_hosts', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_quotas')),
    sa.UniqueConstraint('tenant', name=op.f('uq_host_quotas_tenant'))
    )
    op.create_table('host_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('host_id', sa.String(length=36), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['host_pools.id'], name=op.f('fk_host_events_pool_id_host_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_events'))
    )
    op.create_index('ix_host_events_pool_id_id', 'host_events', ['pool_id', 'id'], unique=False)
    op.create_table('host_pool_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('size_from', sa.Integer(), nullable=False),
    sa.Column('size_to', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['host_pools.id'], name=op.f('fk_host_pool_decisions_pool_id_host_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_pool_decisions'))
    )
    op.create_index('ix_host_pool_decisions_pool_id_id', 'host_pool_decisions', ['pool_id', 'id'], unique=False)
    op.create_table('host_webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('secret_enc', sa.Text(), nullable=False),
    sa.Column('cursor', sa.BigInteger(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered', sa.Integer(), nullable=False),
    sa.Column('given_up', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['host_pools.id'], name=op.f('fk_host_webhooks_pool_id_host_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_webhooks'))
    )
    op.create_index(op.f('ix_host_webhooks_pool_id'), 'host_webhooks', ['pool_id'], unique=False)
    op.create_table('hosts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('blade', sa.String(length=63), nullable=True),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('failover_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('identity', sa.JSON(), nullable=False),
    sa.Column('management_address', sa.String(length=64), nullable=True),
    sa.Column('keep_profile', sa.Boolean(), nullable=False),
    sa.Column('replaces', sa.String(length=36), nullable=True),
    sa.Column('replaced_by', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['host_pools.id'], name=op.f('fk_hosts_pool_id_host_pools'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_hosts_profile_id_profiles'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('pool_id', 'seq', name=op.f('uq_hosts_pool_id_seq'))
    )
    op.create_index('ix_hosts_pool_id_state', 'hosts', ['pool_id', 'state'], unique=False)
    op.create_index(op.f('ix_hosts_state'), 'hosts', ['state'], unique=False)
    op.create_index('uq_hosts_live_profile', 'hosts', ['profile_id'], unique=True, sqlite_where=sa.text("state != 'released'"), postgresql_where=sa.text("state != 'released'"))
    op.create_table('host_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('delivery', sa.String(length=36), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=300), nullable=True),
    sa.Column('elapsed_ms', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['webhook_id'], ['host_webhooks.id'], name=op.f('fk_host_deliveries_webhook_id_host_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_deliveries'))
    )
    op.create_index('ix_host_deliveries_webhook_id_id', 'host_deliveries', ['webhook_id', 'id'], unique=False)
    op.create_table('host_metrics',
    sa.Column('host_id', sa.String(length=36), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cpu', sa.Float(), nullable=True),
    sa.Column('memory', sa.Float(), nullable=True),
    sa.Column('vms', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_host_metrics_host_id_hosts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pool_id'], ['host_pools.id'], name=op.f('fk_host_metrics_pool_id_host_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('host_id', name=op.f('pk_host_metrics'))
    )
    op.create_index(op.f('ix_host_metrics_pool_id'), 'host_metrics', ['pool_id'], unique=False)


def downgrade() -> None:
    for table in ('host_metrics', 'host_deliveries', 'hosts', 'host_webhooks', 'host_pool_decisions', 'host_events',
                  'host_quotas', 'host_pools'):
        op.drop_table(table)
