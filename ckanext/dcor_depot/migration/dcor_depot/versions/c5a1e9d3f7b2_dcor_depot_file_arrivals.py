"""Record the files that arrived before arrivals were recorded

Every file a resource holds counts against its circle's quota through its row
in dcor_depot_file (written when the file arrives since 7a2d9c4e6b18). Files
that arrived before have no row until a job records them: they get one now,
with the dataset's circle and their size: an uploaded file's at CKAN's path (a
resource of url_type upload without a file there holds nothing: its size is
what a user typed), a registered upload's as the registration recorded it.
Deleted resources too (their file stays until it is pruned).

Revision ID: c5a1e9d3f7b2
Revises: 7a2d9c4e6b18
Create Date: 2026-12-06 14:30:00
"""

import datetime

import sqlalchemy as sa
from alembic import op

revision = "c5a1e9d3f7b2"
down_revision = "7a2d9c4e6b18"
branch_labels = None
depends_on = None


def upgrade():
    from ckanext.dcor_depot import placement

    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            """
            SELECT r.id, r.package_id, r.url_type, r.size, p.owner_org
              FROM resource r JOIN package p ON p.id = r.package_id
             WHERE r.url_type IN ('upload', 's3_upload')
               AND NOT EXISTS (SELECT 1 FROM dcor_depot_file f
                                WHERE f.resource_id = r.id AND f.artifact = 'resource')
            """
        )
    ).all()
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for row in rows:
        size = max(row.size, 0) if row.size is not None else None
        if row.url_type == "upload":
            if placement.id_problem(row.id):
                continue  # the commands name such rows; nothing is stored under it
            try:
                path = placement.ckan_path(row.id)
            except Exception:  # noqa: BLE001 - no storage path, or a symlink to check by hand
                continue
            if not path.is_file():
                continue
            size = path.stat().st_size
        connection.execute(
            sa.text(
                """
                INSERT INTO dcor_depot_file
                       (resource_id, artifact, package_id, size, recorded, owner_org)
                VALUES (:id, 'resource', :package_id, :size, :now, :owner_org)
                ON CONFLICT DO NOTHING
                """
            ),
            {
                "id": row.id,
                "package_id": row.package_id,
                "size": size,
                "now": now,
                "owner_org": row.owner_org,
            },
        )


def downgrade():
    pass  # the rows are what the jobs would have written
