"""dcor_depot_copy, dcor_depot_audit, dcor_depot_check: the fixity audit's record

Revision ID: 5e1f0a9b7c31
Revises: 3c9d4e7a1b20
Create Date: 2026-12-02 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "5e1f0a9b7c31"
down_revision = "3c9d4e7a1b20"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "dcor_depot_copy",
        sa.Column("resource_id", sa.UnicodeText, primary_key=True),
        sa.Column("artifact", sa.UnicodeText, primary_key=True),
        sa.Column("copy", sa.UnicodeText, primary_key=True),
        sa.Column("package_id", sa.UnicodeText, nullable=False),
        sa.Column("location", sa.UnicodeText, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.UnicodeText, nullable=False),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("checked", sa.DateTime),
        sa.Column("result", sa.UnicodeText),
        sa.Column("detail", sa.UnicodeText),
        sa.Column("last_ok", sa.DateTime),
    )
    op.create_index("ix_dcor_depot_copy_package_id", "dcor_depot_copy", ["package_id"])
    op.create_index("ix_dcor_depot_copy_checked", "dcor_depot_copy", ["checked"])
    op.create_index("ix_dcor_depot_copy_result", "dcor_depot_copy", ["result"])
    op.create_table(
        "dcor_depot_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started", sa.DateTime, nullable=False),
        sa.Column("finished", sa.DateTime),
        sa.Column("host", sa.UnicodeText, nullable=False),
        sa.Column("package_id", sa.UnicodeText),
        sa.Column("budget_bytes", sa.BigInteger),
        sa.Column("budget_seconds", sa.Integer),
        sa.Column("copies", sa.Integer, nullable=False),
        sa.Column("bytes_read", sa.BigInteger, nullable=False),
        sa.Column("findings", sa.Integer, nullable=False),
        sa.Column("left", sa.Integer, nullable=False),
        sa.Column("summary", sa.UnicodeText),
    )
    op.create_index("ix_dcor_depot_audit_started", "dcor_depot_audit", ["started"])
    op.create_table(
        "dcor_depot_check",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("audit_id", sa.Integer, nullable=False),
        sa.Column("resource_id", sa.UnicodeText),
        sa.Column("artifact", sa.UnicodeText),
        sa.Column("copy", sa.UnicodeText, nullable=False),
        sa.Column("package_id", sa.UnicodeText),
        sa.Column("location", sa.UnicodeText, nullable=False),
        sa.Column("checked", sa.DateTime, nullable=False),
        sa.Column("result", sa.UnicodeText, nullable=False),
        sa.Column("detail", sa.UnicodeText),
        sa.Column("bytes_read", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_dcor_depot_check_audit_id", "dcor_depot_check", ["audit_id"])
    op.create_index("ix_dcor_depot_check_resource_id", "dcor_depot_check", ["resource_id"])


def downgrade():
    op.drop_table("dcor_depot_check")
    op.drop_table("dcor_depot_audit")
    op.drop_table("dcor_depot_copy")
