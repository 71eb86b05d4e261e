"""Circle buckets: created on first use with the extension's statement in the bucket
policy and its rule in the lifecycle configuration.

Operators own the rest of both: a process that touches a bucket adds or sets
right the extension's statement (by its ``Sid``) and rule (by its ``ID``) and
keeps every other statement and rule as it is; it writes only what changed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import botocore.exceptions

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


def with_statements(policy: dict[str, Any] | None, ours: list[dict]) -> dict[str, Any]:
    """``policy`` with the statements ``ours`` in it (replacing those of the same ``Sid``
    where they were, else added at the end); every other statement is kept."""
    if policy is None:
        return {"Version": "2012-10-17", "Statement": list(ours)}
    theirs = policy.get("Statement", [])
    return {**policy, "Statement": _merged(theirs, ours, "Sid")}


def with_rules(rules: list[dict], ours: list[dict]) -> list[dict]:
    """Lifecycle ``rules`` with the rules ``ours`` in them (by ``ID``), the others kept."""
    return _merged(rules, ours, "ID")


def _merged(theirs: list[dict] | dict, ours: list[dict], name: str) -> list[dict]:
    mine = {item[name]: item for item in ours}
    merged, placed = [], set()
    for item in [theirs] if isinstance(theirs, dict) else theirs:
        key = item.get(name)
        if key not in mine:
            merged.append(item)
        elif key not in placed:  # a second one of that name would contradict ours
            merged.append(mine[key])
            placed.add(key)
    return merged + [item for key, item in mine.items() if key not in placed]


class Buckets:
    # buckets
    def circle_bucket(self, organization_id: str) -> str:
        """The name of a circle's bucket (not created by this call)."""
        return circle_bucket_name(self.settings.bucket_name_template, organization_id)

    def ensure_bucket(self, bucket: str, again: bool = False) -> None:
        """Create the bucket if missing; put the extension's statement and rule in its
        policy and lifecycle configuration, keeping the others (module docstring). Once
        per bucket and process, unless ``again``."""
        if bucket in self._ready_buckets and not again:
            return
        with self._lock:
            if bucket in self._ready_buckets and not again:
                return
            with self._errors(f"create bucket {bucket}"):
                try:
                    self.client.create_bucket(Bucket=bucket)
                    log.info("Created bucket %s", bucket)
                except self.client.exceptions.BucketAlreadyOwnedByYou:
                    pass
            with self._errors(f"set the policy of bucket {bucket}"):
                current = self._read(self.client.get_bucket_policy, bucket, "NoSuchBucketPolicy")
                current = json.loads(current["Policy"]) if current else None
                policy = with_statements(current, public_read_policy(bucket)["Statement"])
                if policy != current:
                    self.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
            with self._errors(f"set the lifecycle configuration of bucket {bucket}"):
                current = self._read(
                    self.client.get_bucket_lifecycle_configuration,
                    bucket,
                    "NoSuchLifecycleConfiguration",
                )
                rules = (current or {}).get("Rules", [])
                wanted = with_rules(rules, [self._abort_rule()])
                if wanted != rules:
                    self.client.put_bucket_lifecycle_configuration(
                        Bucket=bucket, LifecycleConfiguration={"Rules": wanted}
                    )
            self._ready_buckets.add(bucket)

    def bucket_is_ready(self, bucket: str) -> None:
        """Another process made the bucket ready (:meth:`ensure_bucket`) moments ago."""
        self._ready_buckets.add(bucket)

    def _abort_rule(self) -> dict[str, Any]:
        """The extension's lifecycle rule: the store aborts forgotten multipart uploads."""
        return {
            "ID": "abort-incomplete-multipart-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {
                "DaysAfterInitiation": self.settings.abort_incomplete_multipart_days
            },
        }

    def _read(self, get, bucket: str, missing: str) -> dict[str, Any] | None:
        """A bucket setting, or None when the bucket has none."""
        try:
            return get(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == missing:
                return None
            raise

    def list_buckets(self, prefix: str = "") -> list[str]:
        with self._errors("list buckets"):
            answer = self.client.list_buckets()
        return sorted(b["Name"] for b in answer.get("Buckets", []) if b["Name"].startswith(prefix))
