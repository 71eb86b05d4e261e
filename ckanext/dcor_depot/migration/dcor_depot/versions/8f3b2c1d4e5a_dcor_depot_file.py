"""dcor_depot_file: every file the extension keeps and where its verified object is

Revision ID: 8f3b2c1d4e5a
Revises:
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "8f3b2c1d4e5a"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "dcor_depot_file",
        sa.Column("resource_id", sa.UnicodeText, primary_key=True),
        sa.Column("artifact", sa.UnicodeText, primary_key=True),
        sa.Column("package_id", sa.UnicodeText, nullable=False),
        sa.Column("bucket", sa.UnicodeText),
        sa.Column("key", sa.UnicodeText),
        sa.Column("sha256", sa.UnicodeText),
        sa.Column("size", sa.BigInteger),
        sa.Column("etag", sa.UnicodeText),
        sa.Column("recorded", sa.DateTime, nullable=False),
        sa.Column("moved_from", sa.UnicodeText),
        sa.Column("purged", sa.DateTime),
    )
    op.create_index("ix_dcor_depot_file_package_id", "dcor_depot_file", ["package_id"])
    op.create_index("ix_dcor_depot_file_purged", "dcor_depot_file", ["purged"])


def downgrade():
    op.drop_table("dcor_depot_file")
