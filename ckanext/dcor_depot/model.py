"""The extension's own table: every file it keeps, and where the verified object of each is.

CKAN's row of a resource can vanish (``dataset_purge``; CKAN also drops the
rows of deleted resources when a dataset's resource list changes), and its
fields can be set by anyone who may edit the dataset. What the extension must
still know then is kept here, written only by its jobs and commands: which
dataset a file belonged to, in which bucket its object lies, its SHA-256, and
when CKAN lost it. Created by the plugin's migrations
(``ckan db upgrade -p dcor_depot``).
"""

from __future__ import annotations

import sqlalchemy as sa
from ckan.model import meta

#: One row per artifact (resource, condensed, preview) of a resource the extension handled.
file_table = sa.Table(
    "dcor_depot_file",
    meta.metadata,
    sa.Column("resource_id", sa.UnicodeText, primary_key=True),
    sa.Column("artifact", sa.UnicodeText, primary_key=True),
    # the dataset of the resource, also after CKAN removed the resource's row
    sa.Column("package_id", sa.UnicodeText, nullable=False, index=True),
    # the verified object; NULL while the file is only on block storage
    sa.Column("bucket", sa.UnicodeText),
    sa.Column("key", sa.UnicodeText),
    sa.Column("sha256", sa.UnicodeText),
    sa.Column("size", sa.BigInteger),
    sa.Column("etag", sa.UnicodeText),
    sa.Column("recorded", sa.DateTime, nullable=False),
    # the bucket of an earlier copy of the object, deleted once the new one is recorded
    sa.Column("moved_from", sa.UnicodeText),
    # when CKAN lost the resource (purge): its copies go after the retention period
    sa.Column("purged", sa.DateTime, index=True),
)
