"""Caller-scoped idempotency keys (with the request they were sent with) and token owners
(a token name is unique among its owner's unrevoked tokens)

Keys stored before this revision were the raw header values of any caller; they are
dropped (set NULL), so no old key can ever match a new caller's digest.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
    op.execute("UPDATE jobs SET idempotency_key = NULL")
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('owner', sa.String(length=128), nullable=False, server_default=''))
    # Older tokens had no owner; each keeps its own id as owner so existing duplicates stay legal.
    op.execute("UPDATE api_tokens SET owner = 'legacy:' || id")
    with op.batch_alter_table('api_tokens') as batch:
        batch.alter_column('owner', server_default=None)
    op.create_index('uq_api_tokens_owner_name', 'api_tokens', ['owner', 'name'], unique=True,
                    sqlite_where=sa.text('revoked_at IS NULL'), postgresql_where=sa.text('revoked_at IS NULL'))


def downgrade() -> None:
    op.drop_index('uq_api_tokens_owner_name', table_name='api_tokens')
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('owner')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('request_hash')
