"""sites (paired peer appliances), their pairing codes, replication cursors and records, and the
profiles' site lease (NULL: held here; otherwise the site where the profile is owned or live)

Revision ID: 0019
Revises: 0016
Create Date: 2026-12-11 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0019'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('profiles') as batch:
        batch.add_column(sa.Column('site_lease', sa.Text(), nullable=True))
    op.create_table('local_site',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_local_site')),
    sa.UniqueConstraint('name', name=op.f('uq_local_site_name'))
    )
    op.create_table('site_pair_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_site_pair_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_site_pair_codes_code_hash'))
    )
    op.create_table('sites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('cert_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    sa.Column('token_enc', sa.Text(), nullable=False),
    sa.Column('their_token_id', sa.Integer(), nullable=True),
    sa.Column('key_enc', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('push', sa.Boolean(), nullable=False),
    sa.Column('outbox_seq', sa.BigInteger(), nullable=False),
    sa.Column('acked_seq', sa.BigInteger(), nullable=False),
    sa.Column('inbox_seq', sa.BigInteger(), nullable=False),
    sa.Column('inbox_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('inbox_record_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('inbox_last', sa.String(length=300), nullable=True),
    sa.Column('last_contact_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['their_token_id'], ['api_tokens.id'], name=op.f('fk_sites_their_token_id_api_tokens'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sites')),
    sa.UniqueConstraint('name', name=op.f('uq_sites_name'))
    )
    op.create_table('replication_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('op', sa.String(length=8), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sig', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_replication_outbox_site_id_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replication_outbox')),
    sa.UniqueConstraint('site_id', 'seq', name=op.f('uq_replication_outbox_site_id_seq'))
    )
    op.create_table('replication_sent',
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_replication_sent_site_id_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('site_id', 'kind', 'key', name=op.f('pk_replication_sent'))
    )
    op.create_table('replication_applied',
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_replication_applied_site_id_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('site_id', 'kind', 'key', name=op.f('pk_replication_applied'))
    )


def downgrade() -> None:
    op.drop_table('replication_applied')
    op.drop_table('replication_sent')
    op.drop_table('replication_outbox')
    op.drop_table('sites')
    op.drop_table('site_pair_codes')
    op.drop_table('local_site')
    with op.batch_alter_table('profiles') as batch:
        batch.drop_column('site_lease')
