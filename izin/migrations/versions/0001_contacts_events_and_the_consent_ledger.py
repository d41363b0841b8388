"""contacts, events and the consent ledger

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 16:41:44.619144
"""
from alembic import op
import sqlalchemy as sa
import izin.db


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('phone_mobile', sa.Boolean(), nullable=True),
    sa.Column('birthday', sa.Date(), nullable=True),
    sa.Column('birth_month', sa.SmallInteger(), nullable=True),
    sa.Column('birth_day', sa.SmallInteger(), nullable=True),
    sa.Column('locale', sa.String(length=8), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('recipient_type', sa.String(length=8), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('created_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('targeting_purged_at', izin.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('external_id', name=op.f('uq_contacts_external_id'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_birth_month_day', ['birth_month', 'birth_day'], unique=False)
        batch_op.create_index(batch_op.f('ix_contacts_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_contacts_phone'), ['phone'], unique=False)

    head = op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_head'))
    )
    # the one row writers lock; the chain starts from the genesis hash
    op.bulk_insert(head, [{"id": 1, "last_id": 0, "last_hash": "0" * 64}])
    op.create_table('purge_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('cutoff', izin.db.UTCDateTime(), nullable=False),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.Column('contacts', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purge_runs'))
    )
    op.create_table('consent_events',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('contact_ref', sa.String(length=128), nullable=True),
    sa.Column('recipient', sa.String(length=320), nullable=True),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=4), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('recipient_type', sa.String(length=8), nullable=False),
    sa.Column('consent_date', izin.db.UTCDateTime(), nullable=False),
    sa.Column('recorded_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('proof', sa.Text(), nullable=True),
    sa.Column('iys_uploadable', sa.Boolean(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('purge_run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_consent_events_contact_id_contacts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['purge_run_id'], ['purge_runs.id'], name=op.f('fk_consent_events_purge_run_id_purge_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_events')),
    sa.UniqueConstraint('hash', name=op.f('uq_consent_events_hash'))
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.create_index('ix_consent_events_contact_id', ['contact_id'], unique=False)
        batch_op.create_index('ix_consent_events_key', ['recipient', 'channel', 'recipient_type', 'id'], unique=False)
        batch_op.create_index('ix_consent_events_recorded_at', ['recorded_at'], unique=False)

    op.create_table('contact_addresses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('valid_from', izin.db.UTCDateTime(), nullable=False),
    sa.Column('valid_to', izin.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_contact_addresses_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_addresses'))
    )
    with op.batch_alter_table('contact_addresses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_addresses_address'), ['address'], unique=False)
        batch_op.create_index('ix_contact_addresses_contact_kind', ['contact_id', 'kind'], unique=False)

    op.create_table('contact_tags',
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_contact_tags_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('contact_id', 'tag', name=op.f('pk_contact_tags'))
    )
    with op.batch_alter_table('contact_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_tags_tag'), ['tag'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('imported_at', izin.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_events_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_events_event_id'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_contact_name_occurred_at', ['contact_id', 'name', 'occurred_at'], unique=False)
        batch_op.create_index('ix_events_name_occurred_at', ['name', 'occurred_at'], unique=False)

    op.create_table('consent_state',
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('recipient_type', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=4), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('consent_date', izin.db.UTCDateTime(), nullable=False),
    sa.Column('recorded_at', izin.db.UTCDateTime(), nullable=False),
    sa.Column('ever_onay', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['consent_events.id'], name=op.f('fk_consent_state_event_id_consent_events')),
    sa.PrimaryKeyConstraint('recipient', 'channel', 'recipient_type', name=op.f('pk_consent_state'))
    )


def downgrade() -> None:
    op.drop_table('consent_state')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_name_occurred_at')
        batch_op.drop_index('ix_events_contact_name_occurred_at')

    op.drop_table('events')
    with op.batch_alter_table('contact_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_tags_tag'))

    op.drop_table('contact_tags')
    with op.batch_alter_table('contact_addresses', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_addresses_contact_kind')
        batch_op.drop_index(batch_op.f('ix_contact_addresses_address'))

    op.drop_table('contact_addresses')
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_events_recorded_at')
        batch_op.drop_index('ix_consent_events_key')
        batch_op.drop_index('ix_consent_events_contact_id')

    op.drop_table('consent_events')
    op.drop_table('purge_runs')
    op.drop_table('ledger_head')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_phone'))
        batch_op.drop_index(batch_op.f('ix_contacts_email'))
        batch_op.drop_index('ix_contacts_birth_month_day')

    op.drop_table('contacts')
