"""GPS truth: late events, the fence version in PostgreSQL, per-organisation late limit, per-place GPS tuning.

- `events.late`: the fix behind the event reached the server later than the organisation's limit; such events
  never push (content, staff tasks, dwell) but are kept, exported and sent to webhooks with the flag.
- `organisations.fence_version`: bumped in the transaction of every fence change, so every API process finds a
  change within a second even when the Redis message that announces it is lost.
- `organisations.late_fix_after_s`: the organisation's late limit (NULL: the service's setting).
- `places.gps_tuning`: per-place overrides of the transition model's parameters (e.g. a wide glass façade).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("late", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column(
        "organisations", sa.Column("fence_version", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("organisations", sa.Column("late_fix_after_s", sa.Integer(), nullable=True))
    op.add_column(
        "places",
        sa.Column("gps_tuning", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.create_index("ix_events_org_id", "events", ["organisation_id", "id"])
    op.create_index("ix_visits_org_id", "visits", ["organisation_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_visits_org_id", "visits")
    op.drop_index("ix_events_org_id", "events")
    op.drop_column("places", "gps_tuning")
    op.drop_column("organisations", "late_fix_after_s")
    op.drop_column("organisations", "fence_version")
    op.drop_column("events", "late")
