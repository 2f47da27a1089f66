"""Partition upkeep never fails: days whose fixes already landed in the DEFAULT partition are skipped.

If the worker was down long enough for fixes to land in `fixes_default`, creating that day's partition would
fail ("updated partition constraint for default partition would be violated") and take retention with it.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ENSURE_PARTITIONS = """
CREATE OR REPLACE FUNCTION placecast_ensure_fix_partitions(days_back int, days_ahead int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date
    LOOP
        IF to_regclass('fixes_' || to_char(day, 'YYYYMMDD')) IS NULL AND NOT EXISTS (
            SELECT 1 FROM fixes_default WHERE received_at >= day::timestamptz AND received_at < (day + 1)::timestamptz
        ) THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF fixes FOR VALUES FROM (%L) TO (%L)',
                'fixes_' || to_char(day, 'YYYYMMDD'), day::timestamptz, (day + 1)::timestamptz);
        END IF;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute(ENSURE_PARTITIONS)


def downgrade() -> None:
    pass  # the earlier definition differs only in failing on such days
