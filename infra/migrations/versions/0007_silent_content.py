"""Silent content: `content_items.silent`, pushed as data only.

A silent item's push carries no notification block: Android hands the data to the app, iOS wakes it in the
background (`apns-push-type: background`, `content-available`). Its title and body are still the inbox entry.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("content_items", sa.Column("silent", sa.Boolean(), server_default=sa.text("false"), nullable=False))


def downgrade() -> None:
    op.drop_column("content_items", "silent")
