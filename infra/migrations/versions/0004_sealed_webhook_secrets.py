"""Webhook secrets are stored sealed (services/sealing.py): a longer column, and existing ones sealed.

Sealing uses the PLACECAST_SECRET_KEY of the environment that runs the migration — the same one `placecast up`
and the worker use.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from infra.settings import get_settings
from services.sealing import PREFIX, Sealer

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("webhook_subscriptions", "secret", type_=sa.Text(), existing_type=sa.String(length=128))
    sealer = Sealer(get_settings().secret_key.get_secret_value())
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, secret FROM webhook_subscriptions WHERE secret NOT LIKE :p"), {"p": PREFIX + "%"}
    ).all()
    for subscription_id, secret in rows:
        connection.execute(
            sa.text("UPDATE webhook_subscriptions SET secret = :s WHERE id = :i"),
            {"s": sealer.seal(secret), "i": subscription_id},
        )


def downgrade() -> None:
    sealer = Sealer(get_settings().secret_key.get_secret_value())
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, secret FROM webhook_subscriptions WHERE secret LIKE :p"), {"p": PREFIX + "%"}
    ).all()
    for subscription_id, secret in rows:
        connection.execute(
            sa.text("UPDATE webhook_subscriptions SET secret = :s WHERE id = :i"),
            {"s": sealer.open(secret), "i": subscription_id},
        )
    op.alter_column("webhook_subscriptions", "secret", type_=sa.String(length=128), existing_type=sa.Text())
