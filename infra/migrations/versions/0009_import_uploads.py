"""Uploaded imports in PostgreSQL: `import_uploads` and its 1 MiB `import_upload_chunks`.

The API wrote an upload under `var/uploads` and the worker read it there, so the two had to share a disk. Now the
bytes go into PostgreSQL in the transaction that records the import, and whichever worker takes the job reads them
back chunk by chunk. `bench/uploads.py` chose 1 MiB bytea rows over one bytea value (which holds the whole file in
memory on both sides) and over a large object (slower, larger on disk, and not removed by a cascade).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_uploads",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("organisation_id", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("chunks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name="fk_import_uploads_organisation_id_organisations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_import_uploads"),
    )
    op.create_index("ix_import_uploads_organisation_id", "import_uploads", ["organisation_id"])
    op.create_index("ix_import_uploads_lease_until", "import_uploads", ["lease_until"])
    op.create_table(
        "import_upload_chunks",
        sa.Column("upload_id", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["import_uploads.id"],
            name="fk_import_upload_chunks_upload_id_import_uploads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("upload_id", "seq", name="pk_import_upload_chunks"),
    )


def downgrade() -> None:
    op.drop_table("import_upload_chunks")
    op.drop_table("import_uploads")
