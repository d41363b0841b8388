"""campaigns and deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 16:51:24.491013
"""
from alembic import op
import sqlalchemy as sa
import izin.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('started_at', izin.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    sa.UniqueConstraint('name', name=op.f('uq_campaigns_name'))
    )
    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('occurrence', sa.String(length=128), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('commercial', sa.Boolean(), nullable=False),
    sa.Column('due_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('next_attempt_at', izin.db.UTCDateTime(), nullable=True),
    sa.Column('consent_event_id', sa.Integer(), nullable=True),
    sa.Column('basis', sa.String(length=16), nullable=True),
    sa.Column('event_ref', sa.String(length=128), nullable=True),
    sa.Column('coupon_code', sa.String(length=32), nullable=True),
    sa.Column('coupon_percent', sa.SmallInteger(), nullable=True),
    sa.Column('coupon_expires_on', sa.Date(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_until', izin.db.UTCDateTime(), nullable=True),
    sa.Column('provider_id', sa.String(length=128), nullable=True),
    sa.Column('segments', sa.SmallInteger(), nullable=True),
    sa.Column('created_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('sent_at', izin.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_deliveries_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['consent_event_id'], ['consent_events.id'], name=op.f('fk_deliveries_consent_event_id_consent_events')),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_deliveries_contact_id_contacts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('campaign_id', 'contact_id', 'occurrence', name=op.f('uq_deliveries_campaign_id_contact_id_occurrence')),
    sa.UniqueConstraint('coupon_code', name=op.f('uq_deliveries_coupon_code'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_contact_sent_at', ['contact_id', 'sent_at'], unique=False)
        batch_op.create_index('ix_deliveries_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_status_next_attempt_at')
        batch_op.drop_index('ix_deliveries_contact_sent_at')

    op.drop_table('deliveries')
    op.drop_table('campaigns')
