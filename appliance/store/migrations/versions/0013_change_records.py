"""Change records: every change to a blade, profile, binding, VLAN, LUN grant, firmware or BIOS
setting, append-only (the CMDB feed, and the source of usage)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 15:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGERS = (
    "CREATE TRIGGER change_records_no_update BEFORE UPDATE ON change_records "
    "BEGIN SELECT RAISE(ABORT, 'change records are append-only'); END",
    "CREATE TRIGGER change_records_no_delete BEFORE DELETE ON change_records "
    "BEGIN SELECT RAISE(ABORT, 'change records are append-only'); END",
)
_PG_TRIGGERS = (
    "CREATE FUNCTION change_records_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'change records are append-only'; END $$",
    "CREATE TRIGGER change_records_no_change BEFORE UPDATE OR DELETE ON change_records "
    "FOR EACH ROW EXECUTE FUNCTION change_records_append_only()",
)


def upgrade() -> None:
    op.create_table(
        'change_records',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('who', sa.String(length=128), nullable=False),
        sa.Column('resource', sa.String(length=16), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=True),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('before', sa.JSON(), nullable=True),
        sa.Column('after', sa.JSON(), nullable=True),
        sa.Column('job_id', sa.String(length=36), nullable=True),
        sa.Column('step', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_change_records')),
    )
    op.create_index(op.f('ix_change_records_at'), 'change_records', ['at'])
    op.create_index(op.f('ix_change_records_tenant'), 'change_records', ['tenant'])
    op.create_index(op.f('ix_change_records_job_id'), 'change_records', ['job_id'])
    op.create_index('ix_change_records_resource_name_id', 'change_records', ['resource', 'name', 'id'])
    for stmt in _PG_TRIGGERS if op.get_bind().dialect.name == 'postgresql' else _SQLITE_TRIGGERS:
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER change_records_no_change ON change_records")
        op.execute("DROP FUNCTION change_records_append_only()")
    op.drop_index('ix_change_records_resource_name_id', table_name='change_records')
    op.drop_index(op.f('ix_change_records_job_id'), table_name='change_records')
    op.drop_index(op.f('ix_change_records_tenant'), table_name='change_records')
    op.drop_index(op.f('ix_change_records_at'), table_name='change_records')
    op.drop_table('change_records')
