"""Boot attempts opened by the engine: a boot token row carries the nonce its token is derived
from (with the boot key) and the job that awaits it; serving a script writes nothing

Boot tokens of the old kind (issued per script fetch, no nonce) cannot be derived again: they
are voided, so a stamp in flight across the upgrade times out and rolls back (its job says so).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('boot_tokens', sa.Column('nonce', sa.String(length=64), nullable=True))
    op.add_column('boot_tokens', sa.Column('job_id', sa.String(length=36), nullable=True))
    op.execute("UPDATE boot_tokens SET voided_at = created_at WHERE kind = 'boot' AND voided_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('boot_tokens') as batch:
        batch.drop_column('job_id')
        batch.drop_column('nonce')
