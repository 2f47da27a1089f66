"""Webhook secrets are stored sealed (services/sealing.py): a longer column, and existing ones sealed.

Sealing uses the PLACECAST_SECRET_KEY of the environment that runs the migration — the same one `placecast up`
and the worker use.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from infra.settings import get_settings
from kernel.sealing import PREFIX, Sealer

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _rewrite_secrets(sealed_now: bool, transform: Callable[[str], str]) -> None:
    """Apply `transform` to every secret that is (or is not, per `sealed_now`) sealed."""
    match = "LIKE" if sealed_now else "NOT LIKE"
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(f"SELECT id, secret FROM webhook_subscriptions WHERE secret {match} :p"), {"p": PREFIX + "%"}
    ).all()
    for subscription_id, secret in rows:
        connection.execute(
            sa.text("UPDATE webhook_subscriptions SET secret = :s WHERE id = :i"),
            {"s": transform(secret), "i": subscription_id},
        )


def upgrade() -> None:
    op.alter_column("webhook_subscriptions", "secret", type_=sa.Text(), existing_type=sa.String(length=128))
    _rewrite_secrets(False, Sealer(get_settings().secret_key.get_secret_value()).seal)


def downgrade() -> None:
    _rewrite_secrets(True, Sealer(get_settings().secret_key.get_secret_value()).open)
    op.alter_column("webhook_subscriptions", "secret", type_=sa.String(length=128), existing_type=sa.Text())
