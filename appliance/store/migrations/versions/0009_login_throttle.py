"""Login throttling per user and source address (a lock no longer shuts a user out everywhere)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 13:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('login_throttle',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_login_throttle_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_throttle')),
    sa.UniqueConstraint('user_id', 'source', name=op.f('uq_login_throttle_user_id_source'))
    )
    op.create_index(op.f('ix_login_throttle_user_id'), 'login_throttle', ['user_id'], unique=False)
    # Locks of the old kind shut the user out from everywhere: lift them.
    op.execute("UPDATE users SET locked_until = NULL, failed_logins = 0")


def downgrade() -> None:
    op.drop_index(op.f('ix_login_throttle_user_id'), table_name='login_throttle')
    op.drop_table('login_throttle')
