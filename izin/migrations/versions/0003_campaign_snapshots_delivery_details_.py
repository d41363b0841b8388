"""campaign snapshots, delivery details, locks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 17:01:24.407981
"""
from alembic import op
import sqlalchemy as sa
import izin.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('locks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', izin.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_locks'))
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spec_yaml', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('spec_path', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('updated_at', izin.db.UTCDateTime(), nullable=True))

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detail', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('enqueued_at', izin.db.UTCDateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('enqueued_at')
        batch_op.drop_column('detail')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('spec_path')
        batch_op.drop_column('spec_yaml')

    op.drop_table('locks')
