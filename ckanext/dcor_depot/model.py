"""The extension's own tables: every file it keeps and where the verified object of each
is (``dcor_depot_file``), and the uploads it granted (``dcor_depot_upload``, see
``grants.py``).

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

#: One row per upload granted by ``dcor_depot_upload_urls`` and not yet registered or pruned.
upload_table = sa.Table(
    "dcor_depot_upload",
    meta.metadata,
    sa.Column("resource_id", sa.UnicodeText, primary_key=True),
    sa.Column("package_id", sa.UnicodeText, nullable=False),
    # the circle whose quota the upload counts against
    sa.Column("owner_org", sa.UnicodeText, nullable=False, index=True),
    sa.Column("user_id", sa.UnicodeText),
    sa.Column("bucket", sa.UnicodeText, nullable=False),
    sa.Column("key", sa.UnicodeText, nullable=False),
    sa.Column("name", sa.UnicodeText, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("part_size", sa.BigInteger, nullable=False),
    sa.Column("md5", sa.UnicodeText),
    # the multipart upload; NULL for a single PUT
    sa.Column("upload_id", sa.UnicodeText),
    sa.Column("issued", sa.DateTime, nullable=False),
    # the URLs' expiry (renewed when the upload is resumed); pruned after it
    sa.Column("expires", sa.DateTime, nullable=False, index=True),
    # "pending" or "aborted" (the store no longer knows the multipart upload)
    sa.Column("state", sa.UnicodeText, nullable=False),
)
