"""The extension's own tables (each module of ``model/`` holds the queries on one of them)."""

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
    # the dataset's circle when the file arrived or was purged: whose quota it counts
    # against once CKAN has no row of the dataset (until it is pruned)
    sa.Column("owner_org", sa.UnicodeText),
)

#: One row per upload granted by ``dcor_depot_upload_urls`` and not yet registered or pruned.
upload_table = sa.Table(
    "dcor_depot_upload",
    meta.metadata,
    sa.Column("resource_id", sa.UnicodeText, primary_key=True),
    # None: granted to the circle (DCOR-Aid), bound to a dataset when registered
    sa.Column("package_id", sa.UnicodeText),
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

#: The kinds of copy of a file the audit checks: the S3 object, the local backup copy of a
#: file uploaded straight to S3, the depot file behind CKAN's path of an uploaded file.
COPY_KINDS = ("object", "backup", "depot")

#: One row per copy of a file the audit knows, with its last check (NULL: never checked).
copy_table = sa.Table(
    "dcor_depot_copy",
    meta.metadata,
    sa.Column("resource_id", sa.UnicodeText, primary_key=True),
    sa.Column("artifact", sa.UnicodeText, primary_key=True),
    sa.Column("copy", sa.UnicodeText, primary_key=True),
    sa.Column("package_id", sa.UnicodeText, nullable=False, index=True),
    # s3://bucket/key or the local path
    sa.Column("location", sa.UnicodeText, nullable=False),
    # what the copy must hold: the file's recorded size and SHA-256
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.UnicodeText, nullable=False),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("checked", sa.DateTime, index=True),
    # "ok", "missing", "mismatch", "disagrees" (another copy holds the recorded bytes), "error"
    sa.Column("result", sa.UnicodeText, index=True),
    sa.Column("detail", sa.UnicodeText),
    # when the copy last held the recorded bytes
    sa.Column("last_ok", sa.DateTime),
)

#: One row per audit run; ``finished`` is NULL while it runs (or when it was killed).
audit_table = sa.Table(
    "dcor_depot_audit",
    meta.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started", sa.DateTime, nullable=False, index=True),
    sa.Column("finished", sa.DateTime),
    sa.Column("host", sa.UnicodeText, nullable=False),
    # --dataset; NULL: the whole site
    sa.Column("package_id", sa.UnicodeText),
    sa.Column("budget_bytes", sa.BigInteger),
    sa.Column("budget_seconds", sa.Integer),
    sa.Column("copies", sa.Integer, nullable=False, default=0),
    sa.Column("bytes_read", sa.BigInteger, nullable=False, default=0),
    sa.Column("findings", sa.Integer, nullable=False, default=0),
    # copies known but left for a later run (the budget ran out)
    sa.Column("left", sa.Integer, nullable=False, default=0),
    # the summary per circle, as --json prints it
    sa.Column("summary", sa.UnicodeText),
)

#: The history: one row per check of a copy (and per orphan found).
check_table = sa.Table(
    "dcor_depot_check",
    meta.metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("audit_id", sa.Integer, nullable=False, index=True),
    sa.Column("resource_id", sa.UnicodeText, index=True),
    sa.Column("artifact", sa.UnicodeText),
    sa.Column("copy", sa.UnicodeText, nullable=False),
    sa.Column("package_id", sa.UnicodeText),
    sa.Column("location", sa.UnicodeText, nullable=False),
    sa.Column("checked", sa.DateTime, nullable=False),
    sa.Column("result", sa.UnicodeText, nullable=False),
    sa.Column("detail", sa.UnicodeText),
    sa.Column("bytes_read", sa.BigInteger, nullable=False),
)
