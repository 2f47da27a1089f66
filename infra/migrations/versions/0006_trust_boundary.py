"""Trust boundary: per-organisation QR signing keys and the kind of push target a device registered.

- `organisations.qr_key`: the organisation's QR check-in signing key, sealed (services/sealing.py) like webhook
  secrets; NULL until first needed. `qr_key_rotated_at`: when an administrator last rotated it (printed codes
  signed before then no longer verify).
- `devices.push_target_kind`: what `fcm_token` holds — an FCM registration token (`token`) or a Firebase
  installation ID (`fid`); each is sent through the matching firebase-admin target.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("organisations", sa.Column("qr_key", sa.Text(), nullable=True))
    op.add_column("organisations", sa.Column("qr_key_rotated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "devices",
        sa.Column("push_target_kind", sa.String(length=8), server_default=sa.text("'token'"), nullable=False),
    )
    op.create_check_constraint("ck_devices_push_target_kind", "devices", "push_target_kind IN ('token', 'fid')")


def downgrade() -> None:
    op.drop_constraint("ck_devices_push_target_kind", "devices", type_="check")
    op.drop_column("devices", "push_target_kind")
    op.drop_column("organisations", "qr_key_rotated_at")
    op.drop_column("organisations", "qr_key")
