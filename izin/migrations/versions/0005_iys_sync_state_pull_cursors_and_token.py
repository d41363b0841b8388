"""İYS sync: sync state per consent event, pull cursors and the shared token

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 18:09:10.281419
"""
from alembic import op
import sqlalchemy as sa
import izin.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('iys_cursors',
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('after', sa.Text(), nullable=True),
    sa.Column('last_attempt_at', izin.db.UTCDateTime(), nullable=True),
    sa.Column('last_success_at', izin.db.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('pulled_total', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_iys_cursors'))
    )
    op.create_table('iys_token',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('access_token', sa.Text(), nullable=True),
    sa.Column('refresh_token', sa.Text(), nullable=True),
    sa.Column('expires_at', izin.db.UTCDateTime(), nullable=True),
    sa.Column('refresh_expires_at', izin.db.UTCDateTime(), nullable=True),
    sa.Column('requests', sa.JSON(), nullable=False),
    sa.Column('blocked_until', izin.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_iys_token'))
    )
    op.create_table('iys_sync',
    sa.Column('event_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('origin', sa.String(length=10), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('batch_index', sa.Integer(), nullable=True),
    sa.Column('transaction_id', sa.String(length=128), nullable=True),
    sa.Column('creation_date', izin.db.UTCDateTime(), nullable=True),
    sa.Column('error_code', sa.String(length=32), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('answered_at', izin.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['consent_events.id'], name=op.f('fk_iys_sync_event_id_consent_events')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_iys_sync')),
    sa.UniqueConstraint('transaction_id', name=op.f('uq_iys_sync_transaction_id'))
    )
    with op.batch_alter_table('iys_sync', schema=None) as batch_op:
        batch_op.create_index('ix_iys_sync_request_id', ['request_id'], unique=False)
        batch_op.create_index('ix_iys_sync_state_event_id', ['state', 'event_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('iys_sync', schema=None) as batch_op:
        batch_op.drop_index('ix_iys_sync_state_event_id')
        batch_op.drop_index('ix_iys_sync_request_id')

    op.drop_table('iys_sync')
    op.drop_table('iys_token')
    op.drop_table('iys_cursors')
