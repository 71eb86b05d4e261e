"""dcor_depot_upload.package_id may be empty: an upload granted to a circle (DCOR-Aid's
resource_upload_s3_urls), bound to the dataset it is registered in

Revision ID: d4b8e2f6a913
Revises: c5a1e9d3f7b2
Create Date: 2026-12-06 15:00:00
"""

from alembic import op

revision = "d4b8e2f6a913"
down_revision = "c5a1e9d3f7b2"
branch_labels = None
depends_on = None


def upgrade():
    op.alter_column("dcor_depot_upload", "package_id", nullable=True)


def downgrade():
    op.execute("DELETE FROM dcor_depot_upload WHERE package_id IS NULL")
    op.alter_column("dcor_depot_upload", "package_id", nullable=False)
