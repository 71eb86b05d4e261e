"""dcor_depot_upload: uploads granted by dcor_depot_upload_urls and not yet registered

Revision ID: 3c9d4e7a1b20
Revises: 8f3b2c1d4e5a
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "3c9d4e7a1b20"
down_revision = "8f3b2c1d4e5a"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "dcor_depot_upload",
        sa.Column("resource_id", sa.UnicodeText, primary_key=True),
        sa.Column("package_id", sa.UnicodeText, nullable=False),
        sa.Column("owner_org", sa.UnicodeText, nullable=False),
        sa.Column("user_id", sa.UnicodeText),
        sa.Column("bucket", sa.UnicodeText, nullable=False),
        sa.Column("key", sa.UnicodeText, nullable=False),
        sa.Column("name", sa.UnicodeText, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("md5", sa.UnicodeText),
        sa.Column("upload_id", sa.UnicodeText),
        sa.Column("issued", sa.DateTime, nullable=False),
        sa.Column("expires", sa.DateTime, nullable=False),
        sa.Column("state", sa.UnicodeText, nullable=False),
    )
    op.create_index("ix_dcor_depot_upload_owner_org", "dcor_depot_upload", ["owner_org"])
    op.create_index("ix_dcor_depot_upload_expires", "dcor_depot_upload", ["expires"])


def downgrade():
    op.drop_table("dcor_depot_upload")
