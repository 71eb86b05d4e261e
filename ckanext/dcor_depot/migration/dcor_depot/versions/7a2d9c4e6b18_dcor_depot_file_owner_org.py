"""dcor_depot_file.owner_org: the circle a file counts against once its dataset is gone

Revision ID: 7a2d9c4e6b18
Revises: 5e1f0a9b7c31
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "7a2d9c4e6b18"
down_revision = "5e1f0a9b7c31"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("dcor_depot_file", sa.Column("owner_org", sa.UnicodeText))


def downgrade():
    op.drop_column("dcor_depot_file", "owner_org")
