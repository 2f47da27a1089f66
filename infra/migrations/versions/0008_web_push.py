"""Web Push: a device's subscription (endpoint URL, p256dh and auth keys) and the channel its pushes go through.

`devices.push_channel` is `fcm` (the FCM token, as before) or `webpush` (the subscription); existing devices keep
FCM. `webpush_active` goes false when the push service answers 404/410 for that subscription.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("push_channel", sa.String(8), server_default="fcm", nullable=False))
    op.add_column("devices", sa.Column("webpush_endpoint", sa.Text(), nullable=True))
    op.add_column("devices", sa.Column("webpush_p256dh", sa.String(100), nullable=True))
    op.add_column("devices", sa.Column("webpush_auth", sa.String(50), nullable=True))
    op.add_column("devices", sa.Column("webpush_active", sa.Boolean(), server_default=sa.text("true"), nullable=False))


def downgrade() -> None:
    for column in ("webpush_active", "webpush_auth", "webpush_p256dh", "webpush_endpoint", "push_channel"):
        op.drop_column("devices", column)
