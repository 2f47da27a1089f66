"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 16:35:09.437251
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# Daily partitions of `fixes`: retention drops whole partitions instead of deleting rows.
# The DEFAULT partition catches anything outside the prepared range, so an insert never fails.
ENSURE_PARTITIONS = """
CREATE OR REPLACE FUNCTION placecast_ensure_fix_partitions(days_back int, days_ahead int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date
    LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF fixes FOR VALUES FROM (%L) TO (%L)',
            'fixes_' || to_char(day, 'YYYYMMDD'), day::timestamptz, (day + 1)::timestamptz);
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "fixes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("device_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lon", sa.Double(), nullable=False),
        sa.Column("lat", sa.Double(), nullable=False),
        sa.Column("accuracy_m", sa.Double(), nullable=True),
        sa.Column("speed_mps", sa.Double(), nullable=True),
        sa.Column("batch_id", sa.String(length=100), nullable=True),
        sa.Column("source", sa.String(length=16), server_default="native", nullable=False),
        sa.PrimaryKeyConstraint("id", "received_at", name=op.f("pk_fixes")),
        postgresql_partition_by="RANGE (received_at)",
    )
    op.create_index("ix_fixes_device_received", "fixes", ["device_id", "received_at"], unique=False)
    op.create_table(
        "organisations",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=80), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organisations_slug")),
    )
    op.create_table(
        "users",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "api_keys",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "role",
            sa.Enum("owner", "editor", "viewer", name="member_role"),
            server_default="editor",
            nullable=False,
        ),
        sa.Column("purpose", sa.String(length=16), server_default="admin", nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_api_keys_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_organisation_id"), "api_keys", ["organisation_id"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("entity", sa.String(length=80), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_audit_log_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_org_at", "audit_log", ["organisation_id", "at"], unique=False)
    op.create_table(
        "devices",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("platform", sa.Enum("android", "ios", "web", name="device_platform"), nullable=False),
        sa.Column("role", sa.Enum("visitor", "staff", name="device_role"), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("credential_hash", sa.String(length=64), nullable=False),
        sa.Column("fcm_token", sa.Text(), nullable=True),
        sa.Column("fcm_token_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("locale", sa.String(length=35), server_default="en", nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="Europe/Helsinki", nullable=False),
        sa.Column("consents", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("tags", sa.ARRAY(sa.String(length=64)), server_default="{}", nullable=False),
        sa.Column("team", sa.String(length=100), nullable=True),
        sa.Column("is_supervisor", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_devices_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("credential_hash", name=op.f("uq_devices_credential_hash")),
        sa.UniqueConstraint("organisation_id", "external_id", name=op.f("uq_devices_organisation_id")),
    )
    op.create_index(op.f("ix_devices_organisation_id"), "devices", ["organisation_id"], unique=False)
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.Enum("owner", "editor", "viewer", name="member_role"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_memberships_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "organisation_id", name=op.f("pk_memberships")),
    )
    op.create_table(
        "places",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=80), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="Europe/Helsinki", nullable=False),
        sa.Column("opening_hours", sa.Text(), nullable=True),
        sa.Column("external_ref", sa.String(length=200), nullable=True),
        sa.Column("approach_m", sa.Double(), nullable=True),
        sa.Column("properties", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_places_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_places")),
        sa.UniqueConstraint("organisation_id", "external_ref", name=op.f("uq_places_organisation_id")),
    )
    op.create_index("ix_places_org_kind", "places", ["organisation_id", "kind"], unique=False)
    op.create_table(
        "webhook_subscriptions",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("event_types", sa.ARRAY(sa.String(length=16)), server_default="{}", nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_webhook_subscriptions_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_index(
        op.f("ix_webhook_subscriptions_organisation_id"),
        "webhook_subscriptions",
        ["organisation_id"],
        unique=False,
    )
    op.create_table(
        "content_items",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("place_id", sa.BigInteger(), nullable=True),
        sa.Column("place_kind", sa.String(length=80), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("deep_link", sa.Text(), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=16), server_default="enter", nullable=False),
        sa.Column("zone", sa.String(length=16), server_default="building", nullable=False),
        sa.Column("audience_role", sa.String(length=16), nullable=True),
        sa.Column("audience_tags", sa.ARRAY(sa.String(length=64)), server_default="{}", nullable=False),
        sa.Column("schedule", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("cooldown_s", sa.Integer(), server_default="86400", nullable=False),
        sa.Column("daily_cap", sa.Integer(), nullable=True),
        sa.Column("quiet_hours", sa.ARRAY(sa.String(length=5)), nullable=True),
        sa.Column("consent_purpose", sa.String(length=32), server_default="offers", nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(place_id IS NOT NULL) <> (place_kind IS NOT NULL)", name=op.f("ck_content_items_one_target")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_content_items_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["place_id"], ["places.id"], name=op.f("fk_content_items_place_id_places"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_items")),
    )
    op.create_index(op.f("ix_content_items_place_id"), "content_items", ["place_id"], unique=False)
    op.create_index("ix_content_org", "content_items", ["organisation_id"], unique=False)
    op.create_table(
        "device_states",
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_states_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_states")),
    )
    op.create_table(
        "fix_batches",
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.String(length=100), nullable=False),
        sa.Column("fix_count", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_fix_batches_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "batch_id", name=op.f("pk_fix_batches")),
    )
    op.create_geospatial_table(
        "geofences",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("place_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "geom",
            Geometry(
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("radius_m", sa.Double(), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(kind = 'circle' AND radius_m > 0 AND ST_GeometryType(geom) = 'ST_Point') OR (kind = 'polygon' AND radius_m IS NULL AND ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon'))",
            name=op.f("ck_geofences_shape"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_geofences_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["place_id"], ["places.id"], name=op.f("fk_geofences_place_id_places"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_geofences")),
    )
    op.create_geospatial_index(
        "idx_geofences_geom", "geofences", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_index("ix_geofences_org", "geofences", ["organisation_id"], unique=False)
    op.create_index(op.f("ix_geofences_place_id"), "geofences", ["place_id"], unique=False)
    op.create_table(
        "staff_tasks",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("place_id", sa.BigInteger(), nullable=True),
        sa.Column("place_kind", sa.String(length=80), nullable=True),
        sa.Column("team", sa.String(length=100), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("ack_within_s", sa.Integer(), server_default="1800", nullable=False),
        sa.Column("assigned_device_id", sa.BigInteger(), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(place_id IS NOT NULL) <> (place_kind IS NOT NULL)", name=op.f("ck_staff_tasks_one_target")
        ),
        sa.ForeignKeyConstraint(
            ["assigned_device_id"],
            ["devices.id"],
            name=op.f("fk_staff_tasks_assigned_device_id_devices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_staff_tasks_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["place_id"], ["places.id"], name=op.f("fk_staff_tasks_place_id_places"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_tasks")),
    )
    op.create_index(op.f("ix_staff_tasks_place_id"), "staff_tasks", ["place_id"], unique=False)
    op.create_index("ix_tasks_org_status", "staff_tasks", ["organisation_id", "status"], unique=False)
    op.create_table(
        "visits",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("place_id", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_in", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("detected", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_visits_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_visits_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["place_id"], ["places.id"], name=op.f("fk_visits_place_id_places"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
    )
    op.create_index(
        "ix_visits_open",
        "visits",
        ["device_id", "place_id"],
        unique=True,
        postgresql_where="ended_at IS NULL",
    )
    op.create_index("ix_visits_place_started", "visits", ["place_id", "started_at"], unique=False)
    op.create_table(
        "events",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("place_id", sa.BigInteger(), nullable=False),
        sa.Column("fence_id", sa.BigInteger(), nullable=True),
        sa.Column("visit_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("zone", sa.String(length=16), server_default="building", nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_events_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["fence_id"], ["geofences.id"], name=op.f("fk_events_fence_id_geofences"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_events_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["place_id"], ["places.id"], name=op.f("fk_events_place_id_places"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visits.id"], name=op.f("fk_events_visit_id_visits"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_device_at", "events", ["device_id", "occurred_at"], unique=False)
    op.create_index("ix_events_org_at", "events", ["organisation_id", "occurred_at"], unique=False)
    op.create_table(
        "notifications",
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("content_id", sa.BigInteger(), nullable=True),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("place_id", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["content_id"],
            ["content_items.id"],
            name=op.f("fk_notifications_content_id_content_items"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_notifications_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_notifications_event_id_events"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_notifications_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["place_id"], ["places.id"], name=op.f("fk_notifications_place_id_places"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["staff_tasks.id"],
            name=op.f("fk_notifications_task_id_staff_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_device_created", "notifications", ["device_id", "created_at"], unique=False)
    op.create_index(
        "uq_notifications_event_content",
        "notifications",
        ["event_id", "content_id"],
        unique=True,
        postgresql_where="content_id IS NOT NULL",
    )
    op.create_index(
        "uq_notifications_event_task",
        "notifications",
        ["event_id", "task_id"],
        unique=True,
        postgresql_where="task_id IS NOT NULL",
    )
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_outbox_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index("ix_outbox_pending", "outbox", ["id"], unique=False, postgresql_where="processed_at IS NULL")
    op.create_table(
        "webhook_deliveries",
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_webhook_deliveries_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("uq_webhook_delivery", "webhook_deliveries", ["subscription_id", "event_id"], unique=True)
    op.create_table(
        "deliveries",
        sa.Column("notification_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("provider_id", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("uq_deliveries_notification_channel", "deliveries", ["notification_id", "channel"], unique=True)
    op.execute("CREATE TABLE fixes_default PARTITION OF fixes DEFAULT")
    op.execute(ENSURE_PARTITIONS)
    op.execute("SELECT placecast_ensure_fix_partitions(1, 7)")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS placecast_ensure_fix_partitions(int, int)")
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_index("uq_deliveries_notification_channel", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("uq_webhook_delivery", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_outbox_pending", table_name="outbox", postgresql_where="processed_at IS NULL")
    op.drop_table("outbox")
    op.drop_index("uq_notifications_event_task", table_name="notifications", postgresql_where="task_id IS NOT NULL")
    op.drop_index(
        "uq_notifications_event_content",
        table_name="notifications",
        postgresql_where="content_id IS NOT NULL",
    )
    op.drop_index("ix_notifications_device_created", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_events_org_at", table_name="events")
    op.drop_index("ix_events_device_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_visits_place_started", table_name="visits")
    op.drop_index("ix_visits_open", table_name="visits", postgresql_where="ended_at IS NULL")
    op.drop_table("visits")
    op.drop_index("ix_tasks_org_status", table_name="staff_tasks")
    op.drop_index(op.f("ix_staff_tasks_place_id"), table_name="staff_tasks")
    op.drop_table("staff_tasks")
    op.drop_index(op.f("ix_geofences_place_id"), table_name="geofences")
    op.drop_index("ix_geofences_org", table_name="geofences")
    op.drop_geospatial_index("idx_geofences_geom", table_name="geofences", postgresql_using="gist", column_name="geom")
    op.drop_geospatial_table("geofences")
    op.drop_table("fix_batches")
    op.drop_table("device_states")
    op.drop_index("ix_content_org", table_name="content_items")
    op.drop_index(op.f("ix_content_items_place_id"), table_name="content_items")
    op.drop_table("content_items")
    op.drop_index(op.f("ix_webhook_subscriptions_organisation_id"), table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
    op.drop_index("ix_places_org_kind", table_name="places")
    op.drop_table("places")
    op.drop_table("memberships")
    op.drop_index(op.f("ix_devices_organisation_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index("ix_audit_log_org_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_api_keys_organisation_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_table("organisations")
    op.drop_table("fixes")
    # ### end Alembic commands ###
