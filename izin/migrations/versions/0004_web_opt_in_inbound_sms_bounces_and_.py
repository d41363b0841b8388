"""web opt-in, inbound SMS, bounces and delivery reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 17:49:54.539693
"""
from alembic import op
import sqlalchemy as sa
import izin.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('undeliverable_addresses',
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('marked_at', izin.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('address', 'channel', name=op.f('pk_undeliverable_addresses'))
    )
    op.create_table('inbound_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('sender', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('keyword', sa.String(length=64), nullable=True),
    sa.Column('short_number', sa.String(length=32), nullable=True),
    sa.Column('received_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('consent_event_id', sa.Integer(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['consent_event_id'], ['consent_events.id'], name=op.f('fk_inbound_messages_consent_event_id_consent_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_messages')),
    sa.UniqueConstraint('provider_message_id', name=op.f('uq_inbound_messages_provider_message_id'))
    )
    op.create_table('optin_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('locale', sa.String(length=8), nullable=False),
    sa.Column('text_version', sa.String(length=32), nullable=False),
    sa.Column('text_hash', sa.String(length=64), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('code_hash', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('confirmed_at', izin.db.UTCDateTime(), nullable=True),
    sa.Column('consent_event_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['consent_event_id'], ['consent_events.id'], name=op.f('fk_optin_requests_consent_event_id_consent_events')),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_optin_requests_contact_id_contacts'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_optin_requests')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_optin_requests_token_hash'))
    )
    with op.batch_alter_table('optin_requests', schema=None) as batch_op:
        batch_op.create_index('ix_optin_requests_address_channel', ['address', 'channel'], unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_status', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', izin.db.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_deliveries_provider_id'), ['provider_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_provider_id'))
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('provider_status')

    with op.batch_alter_table('optin_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_optin_requests_address_channel')

    op.drop_table('optin_requests')
    op.drop_table('inbound_messages')
    op.drop_table('undeliverable_addresses')
