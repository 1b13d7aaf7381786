"""Bare Metal (Ironic-compatible) API: a stable UUID for every blade, and what the API keeps
about a blade beyond Anvil's model (its hold state, the client's free-form fields, its last
deploy)

Existing blades get a random UUID each.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 10:00:00
"""
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('blades', sa.Column('uuid', sa.String(length=36), nullable=True))
    conn = op.get_bind()
    for (blade_id,) in conn.execute(sa.text("SELECT id FROM blades")).all():
        conn.execute(sa.text("UPDATE blades SET uuid = :u WHERE id = :i"), {"u": str(uuid.uuid4()), "i": blade_id})
    with op.batch_alter_table('blades') as batch:
        batch.alter_column('uuid', existing_type=sa.String(length=36), nullable=False)
        batch.create_unique_constraint(op.f('uq_blades_uuid'), ['uuid'])
    op.create_table('baremetal_nodes',
    sa.Column('blade_id', sa.Integer(), nullable=False),
    sa.Column('hold', sa.String(length=16), nullable=True),
    sa.Column('hold_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.Column('instance_info', sa.JSON(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('driver_info', sa.JSON(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('made_profile', sa.Boolean(), nullable=False),
    sa.Column('provision_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['blade_id'], ['blades.id'], name=op.f('fk_baremetal_nodes_blade_id_blades'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_baremetal_nodes_profile_id_profiles'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('blade_id', name=op.f('pk_baremetal_nodes'))
    )


def downgrade() -> None:
    op.drop_table('baremetal_nodes')
    with op.batch_alter_table('blades') as batch:
        batch.drop_constraint(op.f('uq_blades_uuid'), type_='unique')
        batch.drop_column('uuid')
