"""Listing objects and unfinished multipart uploads, and pruning the latter."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Iterator

import botocore.exceptions

from .client import ObjectInfo, _is_missing


@dataclasses.dataclass(frozen=True)
class StaleUpload:
    """An unfinished multipart upload."""

    bucket: str
    key: str
    upload_id: str
    initiated: datetime.datetime


class Listing:
    def iter_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects under a prefix (size and ETag from the listing, no SHA-256).

        A bucket that does not exist has none (RGW can list a bucket that a
        racing create and delete left behind).
        """
        with self._errors(f"list s3://{bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            pages = iter(pages)
            try:
                first = next(pages, {})
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    return
                raise
            for page in itertools.chain([first], pages):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        bucket=bucket,
                        key=item["Key"],
                        size=item["Size"],
                        etag=item.get("ETag", "").strip('"'),
                        sha256=None,
                        last_modified=item.get("LastModified"),
                    )

    def stale_multipart_uploads(
        self, bucket: str, initiated_before: datetime.datetime, key: str | None = None
    ) -> list[StaleUpload]:
        """Unfinished multipart uploads of a bucket (or of one ``key``) started before a moment."""
        stale = []
        with self._errors(f"list multipart uploads of {bucket}"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=bucket, Prefix=key or ""
            )
            try:
                pages = list(pages)
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    return []  # no bucket, no uploads
                raise
            for page in pages:
                for upload in page.get("Uploads", []):
                    if key is not None and upload["Key"] != key:
                        continue
                    if upload["Initiated"] < initiated_before:
                        stale.append(
                            StaleUpload(
                                bucket, upload["Key"], upload["UploadId"], upload["Initiated"]
                            )
                        )
        return stale

    def prune_multipart_uploads(
        self,
        bucket: str,
        initiated_before: datetime.datetime,
        dry_run: bool = False,
        key: str | None = None,
    ) -> list[StaleUpload]:
        """Abort the unfinished multipart uploads (of one ``key``) started before a moment."""
        stale = self.stale_multipart_uploads(bucket, initiated_before, key)
        if not dry_run:
            for upload in stale:
                with self._errors(f"abort upload {upload.upload_id} of s3://{bucket}/{upload.key}"):
                    self.client.abort_multipart_upload(
                        Bucket=bucket, Key=upload.key, UploadId=upload.upload_id
                    )
        return stale
