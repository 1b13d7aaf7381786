"""DR plans, their runs (rehearsals, activations, failbacks) and each profile's RTO in a run

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-12 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'dr_plans',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('recovery_site', sa.String(length=63), nullable=False),
        sa.Column('origin_site', sa.String(length=63), nullable=True),
        sa.Column('document', sa.JSON(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dr_plans')),
        sa.UniqueConstraint('name', name=op.f('uq_dr_plans_name')),
    )
    op.create_table(
        'dr_runs',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('plan', sa.String(length=63), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('job_id', sa.String(length=36), nullable=True),
        sa.Column('created_by', sa.String(length=128), nullable=True),
        sa.Column('primary_lost', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('rto_seconds', sa.Float(), nullable=True),
        sa.Column('profiles', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dr_runs')),
    )
    op.create_index('ix_dr_runs_plan_started', 'dr_runs', ['plan', 'started_at'])
    op.create_index(op.f('ix_dr_runs_job_id'), 'dr_runs', ['job_id'])
    op.create_table(
        'dr_run_profiles',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('stamped_as', sa.String(length=63), nullable=False),
        sa.Column('wave', sa.Integer(), nullable=False),
        sa.Column('pool', sa.String(length=63), nullable=True),
        sa.Column('blade', sa.String(length=63), nullable=True),
        sa.Column('job_id', sa.String(length=36), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('rto_seconds', sa.Float(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['dr_runs.id'], name=op.f('fk_dr_run_profiles_run_id_dr_runs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dr_run_profiles')),
        sa.UniqueConstraint('run_id', 'tenant', 'name', name=op.f('uq_dr_run_profiles_run_id_tenant_name')),
    )
    op.create_index(op.f('ix_dr_run_profiles_run_id'), 'dr_run_profiles', ['run_id'])


def downgrade() -> None:
    op.drop_table('dr_run_profiles')
    op.drop_index(op.f('ix_dr_runs_job_id'), table_name='dr_runs')
    op.drop_index('ix_dr_runs_plan_started', table_name='dr_runs')
    op.drop_table('dr_runs')
    op.drop_table('dr_plans')
