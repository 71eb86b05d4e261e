"""The upload staging area: where users' uploads land, written by a second S3 identity.

Upload URLs handed to users are signed by the *upload identity*
(``S3Settings.upload_access_key_id``). A presigned URL is as powerful as the
identity that signed it, and the store carries out headers that were not signed
(a copy source, an ACL, tags), so this identity may do nothing but write objects
and run multipart uploads in the staging bucket. It owns that bucket: Ceph RGW
then lets the extension's own identity read what a client wrote, whatever the
client sent (DCOR-Aid's PUTs carry nothing but Content-Length). The bucket's
policy gives the extension's identity the reads, deletions and listings it needs
and denies the upload identity every other action: it cannot read, list, delete,
tag or change the ACL of anything, nor copy (a copy reads its source), nor change
the bucket. Public ACLs are ignored (PublicAccessBlock ``IgnorePublicAcls``;
``BlockPublicAcls`` makes Ceph RGW 16 refuse every PUT), so nothing staged is
ever served. A lifecycle rule lets the store itself remove what outlives every
grant.

A registration copies the staged object into its circle bucket with the
extension's identity (:meth:`Staging.copy_staged`): the copy must have the ETag
the staged object was checked by; it gets the extension's metadata, a private
ACL and no tags. The staged object stays until the registration has committed (the
s3-sha256 job deletes it). Nothing a
user's URL can reach is ever served, tagged public or recorded.

The bucket is set up by the extension on first use, with the upload identity,
policy last: once the policy is in place the upload identity cannot change it
any more (an operator can, with ``radosgw-admin``).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import botocore.exceptions

from .client import ObjectInfo, ObjectUnreadable, S3Error

log = logging.getLogger(__name__)

#: What the upload identity may not do in the staging bucket: everything but
#: ``s3:PutObject`` (a multipart upload's creation, parts and completion are that too)
#: and ``s3:AbortMultipartUpload``. Ceph RGW 16 ignores ``NotAction``; it matches these
#: wildcards (every read, list, deletion and change of the bucket).
DENIED_TO_UPLOADER = (
    "s3:Get*",
    "s3:List*",
    "s3:Delete*",
    "s3:PutBucket*",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:PutLifecycleConfiguration",
    "s3:PutReplicationConfiguration",
    "s3:PutAccelerateConfiguration",
    "s3:CreateBucket",
    "s3:BypassGovernanceRetention",
)
#: What the extension's identity may do in the staging bucket.
EXTENSION_ACTIONS = (
    "s3:GetObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListMultipartUploadParts",
    "s3:AbortMultipartUpload",
    "s3:GetBucketPolicy",
)
#: Days after which the store removes a staged object: longer than any grant
#: (upload URLs expire within 7 days at most, S3's limit).
STAGED_OBJECT_DAYS = 8


def user_arn(owner_id: str) -> str:
    """The policy principal of an RGW user, from the owner id ListBuckets names
    (``tenant$user`` for a user of a tenant)."""
    tenant, _, user = owner_id.rpartition("$")
    return f"arn:aws:iam::{tenant}:user/{user}"


def staging_policy(bucket: str, extension_id: str, uploader_id: str) -> dict[str, Any]:
    """The staging bucket's policy: the extension reads, the upload identity only writes."""
    resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ExtensionReadsAndRemovesStagedUploads",
                "Effect": "Allow",
                "Principal": {"AWS": [user_arn(extension_id)]},
                "Action": list(EXTENSION_ACTIONS),
                "Resource": resources,
            },
            {
                "Sid": "UploadIdentityOnlyWrites",
                "Effect": "Deny",
                "Principal": {"AWS": [user_arn(uploader_id)]},
                "Action": list(DENIED_TO_UPLOADER),
                "Resource": resources,
            },
        ],
    }


class Staging:
    @functools.cached_property
    def uploader(self):
        """The upload identity's client at CKAN's address (creates multipart uploads,
        sets the staging bucket up); None when no upload identity is configured."""
        if not self.settings.upload_access_key_id:
            return None
        return self._client(self.settings.endpoint_url, 1, upload_identity=True)

    @functools.cached_property
    def upload_signer(self):
        """The upload identity's client that signs URLs for users, at their address."""
        if self.uploader is None:
            return None
        if self.settings.users_endpoint_url == self.settings.endpoint_url:
            return self.uploader
        return self._client(self.settings.users_endpoint_url, 1, upload_identity=True)

    def require_uploader(self) -> None:
        """Raise :class:`NoUploadIdentity` when uploads by users are off."""
        if self.uploader is None:
            raise NoUploadIdentity(
                "No upload identity is configured (dcor_object_store.upload_access_key_id "
                "and .upload_secret_access_key): upload URLs are signed only by an identity "
                "that can do nothing but write into the staging bucket"
            )

    def ensure_staging(self) -> str:
        """The staging bucket, set up as the module docstring says (once per process)."""
        self.require_uploader()
        bucket = self.settings.staging_bucket
        if bucket in self._ready_buckets:
            return bucket
        with self._lock:
            if bucket in self._ready_buckets:
                return bucket
            with self._errors("identify the object store's users"):
                extension_id = self.client.list_buckets()["Owner"]["ID"]
                uploader_id = self.uploader.list_buckets()["Owner"]["ID"]
            wanted = staging_policy(bucket, extension_id, uploader_id)
            if self._staging_policy(bucket) != wanted:
                self._set_up_staging(bucket, wanted)
            self._ready_buckets.add(bucket)
        return bucket

    def _staging_policy(self, bucket: str) -> dict[str, Any] | None:
        """The staging bucket's policy as the extension's identity reads it; None when the
        bucket or its policy does not exist, or the extension may not read it yet."""
        try:
            with self._errors(f"read the policy of the staging bucket {bucket}"):
                answer = self.client.get_bucket_policy(Bucket=bucket)
        except S3Error:
            return None
        return json.loads(answer["Policy"])

    def _set_up_staging(self, bucket: str, policy: dict[str, Any]) -> None:
        uploader = self.uploader
        where = f"set up the staging bucket {bucket} with the upload identity"
        try:
            with self._errors(where):
                try:
                    uploader.create_bucket(Bucket=bucket)
                    log.info("Created the staging bucket %s", bucket)
                except uploader.exceptions.BucketAlreadyOwnedByYou:
                    pass
                uploader.put_bucket_lifecycle_configuration(
                    Bucket=bucket, LifecycleConfiguration={"Rules": self._staging_rules()}
                )
                uploader.put_public_access_block(
                    Bucket=bucket,
                    PublicAccessBlockConfiguration={
                        "BlockPublicAcls": False,
                        "IgnorePublicAcls": True,
                        "BlockPublicPolicy": False,
                        "RestrictPublicBuckets": False,
                    },
                )
                uploader.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        except S3Error as exc:
            raise S3Error(
                f"{exc}. The staging bucket must belong to the upload identity and have the "
                "policy of this version of the extension: remove the bucket (radosgw-admin "
                f"bucket rm --bucket={bucket} --purge-objects) and the extension sets it up "
                "again on its next upload grant"
            ) from exc
        log.info("Set up the staging bucket %s: the upload identity may only write", bucket)

    def _staging_rules(self) -> list[dict[str, Any]]:
        return [
            self._abort_rule(),
            {
                "ID": "expire-staged-uploads",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "Expiration": {"Days": STAGED_OBJECT_DAYS},
            },
        ]

    def staged_info(self, key: str) -> ObjectInfo | None:
        """The staged object under ``key`` (a HEAD); None when there is none. One the
        store cannot read is deleted and :class:`StagedObjectUnreadable` says why: Ceph
        RGW carries out a presigned PUT with SSE-C headers that were not signed
        (``x-amz-server-side-encryption-customer-*``, measured), and the object then
        answers 400 to every read without the client's key."""
        staging = self.settings.staging_bucket
        try:
            return self.object_info(staging, key)
        except ObjectUnreadable:
            if not self._needs_customer_key(staging, key):
                raise
            self.delete_object(staging, key)
            raise StagedObjectUnreadable(
                "The uploaded file was sent with an encryption key of the client's "
                "(x-amz-server-side-encryption-customer-* headers), so the site cannot "
                "read it; it was removed. Send the file again without those headers"
            ) from None

    def _needs_customer_key(self, bucket: str, key: str) -> bool:
        """A GET of the object says why a HEAD was refused (a HEAD answer has no body):
        RGW names the missing customer key (SSE-C) with InvalidArgument."""
        try:
            self.client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            message = error.get("Message", "")
            return error.get("Code") == "InvalidArgument" and "Customer provided keys" in message
        except botocore.exceptions.BotoCoreError:
            return False
        return False

    def copy_staged(
        self,
        key: str,
        info: ObjectInfo,
        bucket: str,
        target_key: str,
        metadata: dict[str, str],
        served: dict[str, str],
    ) -> None:
        """Copy the staged object that ``info`` (a HEAD) describes to
        ``s3://bucket/target_key`` with the extension's identity: the extension's
        ``metadata`` and ``served`` headers, a private ACL, no tags. The copy must have
        the ETag the staged object was checked with (Ceph RGW 16 ignores
        ``x-amz-copy-source-if-match``; its copy keeps the ETag, single or multipart, and
        CopyObject answers it: no HEAD of the copy): a staged key written again meanwhile
        is not put in place. The staged object stays (the s3-sha256 job
        deletes it once the registration committed): a registration whose transaction
        rolls back can be made again."""
        staging = self.settings.staging_bucket
        self.ensure_bucket(bucket)
        where = f"copy the staged upload s3://{staging}/{key} to s3://{bucket}/{target_key}"
        with self._errors(where):
            answer = self.client.copy_object(
                Bucket=bucket,
                Key=target_key,
                CopySource={"Bucket": staging, "Key": key},
                CopySourceIfMatch=f'"{info.etag}"',
                MetadataDirective="REPLACE",
                Metadata=metadata,
                TaggingDirective="REPLACE",
                Tagging="",
                ACL="private",
                **served,
            )
        copied = answer.get("CopyObjectResult", {}).get("ETag", "").strip('"')
        if copied != info.etag.strip('"'):
            self.delete_object(bucket, target_key)
            raise StagedObjectChanged(
                "The uploaded file was written again while it was registered: register it again"
            )


class NoUploadIdentity(S3Error):
    """Uploads by users are off: no upload identity is configured."""


class StagedObjectChanged(S3Error):
    """A staged object is not the one that was checked any more."""


class StagedObjectUnreadable(S3Error):
    """A staged object the store cannot read (it was removed); the message says why."""
