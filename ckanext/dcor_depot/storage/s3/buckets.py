"""Circle buckets: created on first use with the bucket policy and the lifecycle rule."""

from __future__ import annotations

import json
import logging

from .names import circle_bucket_name
from .visibility import PUBLIC_TAG

log = logging.getLogger(__name__)


def public_read_policy(bucket: str) -> dict:
    """Bucket policy: anonymous GET only for objects tagged ``public=true``."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AnonymousReadOfObjectsTaggedPublic",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
                "Condition": {
                    "StringEquals": {
                        f"s3:ExistingObjectTag/{PUBLIC_TAG['Key']}": PUBLIC_TAG["Value"]
                    }
                },
            }
        ],
    }


class Buckets:
    # buckets
    def circle_bucket(self, organization_id: str) -> str:
        """The name of a circle's bucket (not created by this call)."""
        return circle_bucket_name(self.settings.bucket_name_template, organization_id)

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if missing and (re)apply its policy and lifecycle rule."""
        if bucket in self._ready_buckets:
            return
        with self._lock:
            if bucket in self._ready_buckets:
                return
            with self._errors(f"create bucket {bucket}"):
                try:
                    self.client.create_bucket(Bucket=bucket)
                    log.info("Created bucket %s", bucket)
                except self.client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                self.client.put_bucket_policy(
                    Bucket=bucket, Policy=json.dumps(public_read_policy(bucket))
                )
                self.client.put_bucket_lifecycle_configuration(
                    Bucket=bucket,
                    LifecycleConfiguration={
                        "Rules": [
                            {
                                "ID": "abort-incomplete-multipart-uploads",
                                "Status": "Enabled",
                                "Filter": {"Prefix": ""},
                                "AbortIncompleteMultipartUpload": {
                                    "DaysAfterInitiation": (
                                        self.settings.abort_incomplete_multipart_days
                                    )
                                },
                            }
                        ]
                    },
                )
            self._ready_buckets.add(bucket)

    def list_buckets(self, prefix: str = "") -> list[str]:
        with self._errors("list buckets"):
            answer = self.client.list_buckets()
        return sorted(b["Name"] for b in answer.get("Buckets", []) if b["Name"].startswith(prefix))
