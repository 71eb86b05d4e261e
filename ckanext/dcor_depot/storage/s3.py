"""The S3 layer: circle buckets, object keys, verified uploads and visibility.

Every job and command that touches the object store goes through this module.
It knows nothing of CKAN: it takes plain settings, bucket names, keys and
paths, so it can be used (and benchmarked) without a CKAN site.

Integrity model of :meth:`ObjectStore.upload_verified`: the file is read once.
While streaming, the SHA-256 of the whole file and the MD5 of every part are
computed; each part is sent with ``Content-MD5`` (the server rejects a part
whose bytes changed on the way), and after completion the object's ETag (read
with HEAD) must equal the multipart ETag computed locally. The SHA-256 is kept
in the object's metadata because Ceph RGW neither stores nor returns S3's own
checksum fields.

:meth:`ObjectStore.upload_stream_verified` gives the same guarantees for a
stream that can be read only once (a download): its parts are sent while it
is still arriving.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import BinaryIO

import boto3
import botocore.exceptions
from botocore.config import Config

log = logging.getLogger(__name__)

MiB = 1024**2
#: Artifacts a resource can have in the object store.
ARTIFACTS = ("resource", "condensed", "preview")
#: The tag that makes an object anonymously readable through the bucket policy.
PUBLIC_TAG = {"Key": "public", "Value": "true"}
#: Object metadata key (``x-amz-meta-sha256``) holding the SHA-256 of the object.
SHA256_METADATA_KEY = "sha256"
#: Object metadata key holding the MD5 a client declared for a multipart upload.
MD5_METADATA_KEY = "md5"
#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000
#: The largest object S3 allows (5 TiB).
MAX_OBJECT_SIZE = 5 * 1024**4
#: Chunk size for streaming reads (hashing a file or an object).
STREAM_CHUNK = 4 * MiB

_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESOURCE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{6,}$")


class S3Error(Exception):
    """An object store operation failed; the message says what and why."""


class S3ConnectionError(S3Error):
    """The object store endpoint could not be reached."""


class S3AuthError(S3Error):
    """The object store refused the credentials or the request's permission."""


class UploadVerificationError(S3Error):
    """The object in the store does not match the local file."""


class ObjectConflictError(S3Error):
    """An object with different content already exists under the key."""


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """How to reach the object store and how to upload to it.

    Required: ``endpoint_url``, ``access_key_id``, ``secret_access_key``.
    """

    #: URL of the S3 endpoint, e.g. ``https://objectstore.example.org``.
    endpoint_url: str
    #: Access key of the S3 user owning the circle buckets.
    access_key_id: str
    #: Secret of that user; excluded from ``repr`` so it never reaches a log.
    secret_access_key: str = dataclasses.field(repr=False)
    #: Verify the endpoint's TLS certificate.
    ssl_verify: bool = True
    #: Bucket name template with the placeholder ``{organization_id}``.
    bucket_name_template: str = "circle-{organization_id}"
    #: Days after which the store aborts an unfinished multipart upload.
    abort_incomplete_multipart_days: int = 7
    #: Part size of multipart uploads; files up to this size use one PUT.
    part_size: int = 16 * MiB
    #: Parts of one upload in flight at the same time.
    upload_concurrency: int = 4


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What HEAD tells about an object."""

    bucket: str
    key: str
    size: int
    etag: str
    #: SHA-256 recorded in the object's metadata, if any.
    sha256: str | None
    last_modified: datetime.datetime | None = None
    #: The object's user metadata (``x-amz-meta-*``), names in lower case.
    metadata: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """The outcome of :meth:`ObjectStore.upload_verified`."""

    bucket: str
    key: str
    size: int
    sha256: str
    etag: str
    #: True when a verified identical object was already there.
    skipped: bool = False


@dataclasses.dataclass(frozen=True)
class PresignedUpload:
    """URLs that let a client without S3 credentials write one new object.

    Single PUT (``upload_id`` None): PUT the whole file to ``url`` with
    ``headers``. Multipart: PUT part N (``part_size`` bytes, the last one
    shorter) to ``part_urls[N-1]``, then POST the list of the parts' ETags to
    ``complete_url`` (or DELETE ``abort_url`` to give up).
    """

    bucket: str
    key: str
    size: int
    expires_at: datetime.datetime
    part_size: int
    url: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    upload_id: str | None = None
    part_urls: list[str] = dataclasses.field(default_factory=list)
    complete_url: str | None = None
    abort_url: str | None = None


@dataclasses.dataclass(frozen=True)
class ObjectHashes:
    """What streaming an object's bytes tells."""

    size: int
    sha256: str
    #: Only when asked for: MD5 costs CPU that a SHA-256 check does not need.
    md5: str | None = None


@dataclasses.dataclass(frozen=True)
class StaleUpload:
    """An unfinished multipart upload."""

    bucket: str
    key: str
    upload_id: str
    initiated: datetime.datetime


def resource_subpath(resource_id: str) -> str:
    """``RES/OUR/CEID``: where a resource's files go below a folder or key prefix."""
    if not _RESOURCE_ID_RE.match(resource_id or ""):
        raise ValueError(
            f"Invalid resource id {resource_id!r}: expected lower-case letters, "
            "digits and hyphens, at least 7 characters"
        )
    return f"{resource_id[:3]}/{resource_id[3:6]}/{resource_id[6:]}"


def object_key(artifact: str, resource_id: str) -> str:
    """The key of a resource's artifact: ``{artifact}/RES/OUR/CEID``."""
    if artifact not in ARTIFACTS:
        raise ValueError(f"Unknown artifact {artifact!r}; expected one of {', '.join(ARTIFACTS)}")
    return f"{artifact}/{resource_subpath(resource_id)}"


def parse_object_key(key: str) -> tuple[str, str] | None:
    """``(artifact, resource_id)`` of a key made by :func:`object_key`, else None."""
    artifact, _, rest = key.partition("/")
    parts = rest.split("/")
    if artifact not in ARTIFACTS or len(parts) != 3 or [len(p) for p in parts[:2]] != [3, 3]:
        return None
    resource_id = "".join(parts)
    return (artifact, resource_id) if _RESOURCE_ID_RE.match(resource_id) else None


def circle_bucket_name(template: str, organization_id: str) -> str:
    """The bucket of a circle, rendered from the bucket name template."""
    if "{organization_id}" not in template:
        raise ValueError(
            f"Bucket name template {template!r} lacks the placeholder {{organization_id}}"
        )
    try:
        name = template.format(organization_id=organization_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"Bucket name template {template!r} may only contain the placeholder "
            "{organization_id}"
        ) from exc
    if not _BUCKET_NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"Bucket name {name!r} (from template {template!r}) is not a valid S3 bucket "
            "name: use 3-63 lower-case letters, digits, dots and hyphens"
        )
    return name


def circle_bucket_prefix(template: str) -> str:
    """The fixed beginning of every circle bucket's name."""
    return template.split("{organization_id}", 1)[0]


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


def multipart_etag(part_md5_digests: list[bytes]) -> str:
    """The ETag S3 gives an object assembled from parts with these MD5 digests."""
    joined = hashlib.md5(b"".join(part_md5_digests))
    return f"{joined.hexdigest()}-{len(part_md5_digests)}"


def sha256_of_file(path: str | Path) -> str:
    """SHA-256 of a local file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fd:
        while chunk := fd.read(STREAM_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def part_size_for(size: int, minimum: int) -> int:
    """The part size for a file: ``minimum``, grown in MiB steps to stay within 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    if needed <= minimum:
        return minimum
    return -(-needed // MiB) * MiB


def _at_most(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The chunks, up to one byte more than ``size`` (enough to tell that a stream is too long)."""
    left = size + 1
    for chunk in chunks:
        yield chunk[:left]
        left -= len(chunk)
        if left <= 0:
            return


def _parts_of(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    """The bytes of ``chunks`` in pieces of ``part_size`` (the last one shorter)."""
    pending: list[bytes] = []
    have = 0
    for chunk in chunks:
        pending.append(chunk)
        have += len(chunk)
        while have >= part_size:
            joined = b"".join(pending)  # the one copy; a slice of all of it is no copy
            rest = joined[part_size:]
            yield joined[:part_size]
            pending, have = ([rest] if rest else []), len(rest)
    if pending:
        yield b"".join(pending)


def content_disposition(filename: str) -> str:
    """``attachment`` with a file name browsers keep, non-ASCII ones too (RFC 6266)."""
    name = re.sub(r'[\x00-\x1f\x7f"\\/]', "_", filename)
    fallback = name.encode("ascii", "replace").decode().replace("?", "_")
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    return value


def _file_state(fd: BinaryIO) -> tuple[int, int, int, int]:
    """Size, modification times and inode: what changes when a file is rewritten."""
    stat = os.fstat(fd.fileno())
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def _is_missing(exc: botocore.exceptions.ClientError) -> bool:
    """The error says that the object or its bucket does not exist."""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket")


@contextlib.contextmanager
def _s3_errors(action: str, endpoint: str) -> Iterator[None]:
    """Turn botocore exceptions into :class:`S3Error` messages a user can act on."""
    try:
        yield
    except botocore.exceptions.EndpointConnectionError as exc:
        raise S3ConnectionError(
            f"Cannot {action}: the object store at {endpoint} is unreachable "
            "(check dcor_object_store.endpoint_url and that the server runs)"
        ) from exc
    except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError) as exc:
        raise S3ConnectionError(
            f"Cannot {action}: the object store at {endpoint} did not answer in time"
        ) from exc
    except botocore.exceptions.SSLError as exc:
        raise S3ConnectionError(
            f"Cannot {action}: TLS to {endpoint} failed ({exc}); check the certificate "
            "or dcor_object_store.ssl_verify"
        ) from exc
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise S3AuthError(
                f"Cannot {action}: the object store at {endpoint} rejected the credentials "
                f"({code}); check dcor_object_store.access_key_id and .secret_access_key"
            ) from exc
        if code in ("AccessDenied", "403"):
            raise S3AuthError(
                f"Cannot {action}: access denied by the object store at {endpoint}; check "
                "dcor_object_store.access_key_id and .secret_access_key and the bucket's owner"
            ) from exc
        message = error.get("Message") or code or str(exc)
        raise S3Error(f"Cannot {action}: {code}: {message}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise S3Error(f"Cannot {action}: {exc}") from exc


#: What :meth:`ObjectStore.fixity_problem` says of an object that does not exist.
OBJECT_MISSING = "the object is missing"


class ObjectStore:
    """Access to the circle buckets of one S3 endpoint.

    Thread-safe: one instance can be shared by the threads of a process;
    ``parallel_uploads`` sizes its connection pool for that many uploads at once.
    """

    def __init__(self, settings: S3Settings, parallel_uploads: int = 1):
        self.settings = settings
        self._ready_buckets: set[str] = set()
        self._lock = threading.Lock()
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
        )
        self.client = session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            verify=settings.ssl_verify,
            region_name="us-east-1",
            config=Config(
                # Bodies are not hashed again for the signature: every body is
                # sent with a Content-MD5 header, which is signed and checked by
                # the server (over https botocore skips the hash anyway).
                s3={"addressing_style": "path", "payload_signing_enabled": False},
                signature_version="s3v4",
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=settings.upload_concurrency * parallel_uploads + 4,
                connect_timeout=10,
                read_timeout=120,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def _errors(self, action: str):
        return _s3_errors(action, self.settings.endpoint_url)

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

    # objects
    def object_info(self, bucket: str, key: str) -> ObjectInfo | None:
        """HEAD an object; None when it (or its bucket) does not exist."""
        with self._errors(f"look up s3://{bucket}/{key}"):
            try:
                head = self.client.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=head["ContentLength"],
            etag=head.get("ETag", "").strip('"'),
            sha256=head.get("Metadata", {}).get(SHA256_METADATA_KEY),
            last_modified=head.get("LastModified"),
            metadata=head.get("Metadata", {}),
        )

    def object_exists(self, bucket: str, key: str) -> bool:
        return self.object_info(bucket, key) is not None

    def object_sha256(self, bucket: str, key: str, trust_metadata: bool = True) -> str:
        """SHA-256 of an object: from its metadata, else by streaming its bytes."""
        if trust_metadata:
            info = self.object_info(bucket, key)
            if info is None:
                raise S3Error(f"Object s3://{bucket}/{key} does not exist")
            if info.sha256:
                return info.sha256
        return self.hash_object(bucket, key).sha256

    def read_object(self, bucket: str, key: str) -> Iterator[bytes]:
        """An object's bytes, streamed in chunks; :class:`S3Error` if they end early."""
        with self._errors(f"read s3://{bucket}/{key}"):
            answer = self.client.get_object(Bucket=bucket, Key=key)
            size = 0
            for chunk in answer["Body"].iter_chunks(STREAM_CHUNK):
                size += len(chunk)
                yield chunk
        if size != answer["ContentLength"]:
            raise S3Error(
                f"Reading s3://{bucket}/{key} ended after {size} of {answer['ContentLength']} "
                "bytes; try again"
            )

    def hash_object(self, bucket: str, key: str, md5: bool = False) -> ObjectHashes:
        """Size and SHA-256 (with ``md5`` also the MD5) of an object's bytes, streamed once."""
        sha256, size = hashlib.sha256(), 0
        md5_digest = hashlib.md5() if md5 else None
        for chunk in self.read_object(bucket, key):
            sha256.update(chunk)
            if md5_digest is not None:
                md5_digest.update(chunk)
            size += len(chunk)
        return ObjectHashes(
            size, sha256.hexdigest(), md5_digest.hexdigest() if md5_digest else None
        )

    def record_sha256(self, bucket: str, key: str, sha256: str, size: int) -> None:
        """Store the SHA-256 in an object's metadata, keeping its other metadata.

        Copying the object onto itself replaces its metadata; Ceph RGW does
        this without copying data and keeps the ETag (AWS S3 refuses such a
        copy above 5 GB). RGW drops the object's tags with it: callers set
        the visibility afterwards.
        """
        info = self.object_info(bucket, key)
        if info is None:
            raise S3Error(f"Object s3://{bucket}/{key} does not exist")
        with self._errors(f"record the SHA-256 of s3://{bucket}/{key}"):
            self.client.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                Metadata={**info.metadata, SHA256_METADATA_KEY: sha256},
                MetadataDirective="REPLACE",
            )
        info = self.object_info(bucket, key)
        if info is None or info.size != size or info.sha256 != sha256:
            raise UploadVerificationError(
                f"Recording the SHA-256 in the metadata of s3://{bucket}/{key} failed; "
                "run the job again to retry"
            )

    def fixity_problem(
        self, bucket: str, key: str, sha256: str, size: int, rehash: bool = False
    ) -> str | None:
        """What is wrong with an object that should hold ``size`` bytes with ``sha256``.

        None when nothing is; :data:`OBJECT_MISSING` when it does not exist.
        Compares the size and the SHA-256 in the object's metadata; with
        ``rehash`` also streams the object's bytes and hashes them, which
        finds an object whose bytes changed behind the metadata's back.
        """
        info = self.object_info(bucket, key)
        if info is None:
            return OBJECT_MISSING
        if info.size != size:
            return f"the object has {info.size} bytes, expected {size}"
        if info.sha256 is not None and info.sha256 != sha256:
            return f"the object's metadata says SHA-256 {info.sha256}, expected {sha256}"
        if rehash or info.sha256 is None:
            actual = self.object_sha256(bucket, key, trust_metadata=False)
            if actual != sha256:
                return f"the object's bytes have SHA-256 {actual}, expected {sha256}"
        return None

    def iter_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects under a prefix (size and ETag from the listing, no SHA-256)."""
        with self._errors(f"list s3://{bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        bucket=bucket,
                        key=item["Key"],
                        size=item["Size"],
                        etag=item.get("ETag", "").strip('"'),
                        sha256=None,
                        last_modified=item.get("LastModified"),
                    )

    def delete_object(self, bucket: str, key: str) -> None:
        with self._errors(f"delete s3://{bucket}/{key}"):
            self.client.delete_object(Bucket=bucket, Key=key)

    # visibility
    def set_public(self, bucket: str, key: str, public: bool) -> None:
        """Tag an object ``public=true`` (anonymously readable) or remove that tag."""
        with self._errors(f"change visibility of s3://{bucket}/{key}"):
            current = self.client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            tags = [t for t in current if t["Key"] != PUBLIC_TAG["Key"]]
            if public:
                tags.append(dict(PUBLIC_TAG))
            if tags == current:
                return  # a tagging write would also change the object's Last-Modified on RGW
            if tags:
                self.client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags})
            else:
                self.client.delete_object_tagging(Bucket=bucket, Key=key)

    def is_public(self, bucket: str, key: str) -> bool:
        visible = self.visibility(bucket, key)
        if visible is None:
            raise S3Error(f"Object s3://{bucket}/{key} does not exist")
        return visible

    def visibility(self, bucket: str, key: str) -> bool | None:
        """True when the object is tagged public, False when not, None when it does not exist."""
        with self._errors(f"read tags of s3://{bucket}/{key}"):
            try:
                tags = self.client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
        return PUBLIC_TAG in tags

    def object_url(self, bucket: str, key: str) -> str:
        """The object's URL (readable anonymously only while it is tagged public)."""
        return f"{self.settings.endpoint_url.rstrip('/')}/{bucket}/{key}"

    def presigned_get_url(
        self,
        bucket: str,
        key: str,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A URL that allows GET of one object for ``expires_in`` seconds.

        With ``filename`` the answer says to save it under that name; with
        ``content_type`` the answer has that Content-Type.
        """
        params = {"Bucket": bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type:
            params["ResponseContentType"] = content_type
        with self._errors(f"sign a download URL for s3://{bucket}/{key}"):
            return self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in
            )

    def presigned_upload(
        self,
        bucket: str,
        key: str,
        size: int,
        expires_in: int,
        metadata: dict[str, str] | None = None,
        md5: str | None = None,
    ) -> PresignedUpload:
        """URLs with which a client writes ``size`` bytes to one new object, and nothing else.

        Each URL is signed for its method, key, upload id, part number and
        Content-Length, so it cannot write another key or more bytes. Up to
        the part size the file goes in one PUT, signed with ``If-None-Match:
        *`` (the object is written once: a second PUT is refused) and, given
        the file's hex ``md5``, with ``Content-MD5`` (the store refuses other
        bytes); no multipart upload is created then. Larger files get a
        multipart upload whose parts can only be sent until it is completed;
        ``md5`` is then kept in the object's metadata (:data:`MD5_METADATA_KEY`), for a check
        after the upload. ``metadata`` is stored with the object.
        """
        self.ensure_bucket(bucket)
        if self.object_exists(bucket, key):
            raise ObjectConflictError(f"s3://{bucket}/{key} already exists")
        metadata = dict(metadata or {})
        part_size = part_size_for(size, self.settings.part_size)
        expires_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=expires_in
        )

        def sign(operation: str, http_method: str | None = None, **params) -> str:
            return self.client.generate_presigned_url(
                operation,
                Params={"Bucket": bucket, "Key": key, **params},
                ExpiresIn=expires_in,
                HttpMethod=http_method,
            )

        common = dict(bucket=bucket, key=key, size=size, expires_at=expires_at)
        with self._errors(f"prepare the upload of s3://{bucket}/{key}"):
            if size <= part_size:
                headers = {f"x-amz-meta-{name}": value for name, value in metadata.items()}
                headers["If-None-Match"] = "*"
                params = {"ContentLength": size, "Metadata": metadata, "IfNoneMatch": "*"}
                if md5:
                    params["ContentMD5"] = headers["Content-MD5"] = base64.b64encode(
                        bytes.fromhex(md5)
                    ).decode()
                url = sign("put_object", **params)
                return PresignedUpload(**common, part_size=size, url=url, headers=headers)
            if md5:
                metadata[MD5_METADATA_KEY] = md5
            upload_id = self.client.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata=metadata
            )["UploadId"]
            count = -(-size // part_size)
            part_urls = [
                sign(
                    "upload_part",
                    UploadId=upload_id,
                    PartNumber=number,
                    ContentLength=min(part_size, size - (number - 1) * part_size),
                )
                for number in range(1, count + 1)
            ]
            return PresignedUpload(
                **common,
                part_size=part_size,
                upload_id=upload_id,
                part_urls=part_urls,
                complete_url=sign("complete_multipart_upload", "POST", UploadId=upload_id),
                abort_url=sign("abort_multipart_upload", "DELETE", UploadId=upload_id),
            )

    # uploads
    def upload_verified(
        self,
        path: str | Path,
        bucket: str,
        key: str,
        *,
        overwrite: bool = False,
        sha256: str | None = None,
        public: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """Upload a file so that the object provably equals it.

        The bucket is created on first use. An existing object is never
        replaced unless ``overwrite``: if its size and SHA-256 equal the
        file's, the upload is skipped; otherwise :class:`ObjectConflictError`.
        ``sha256`` is the file's expected SHA-256: a file that does not match
        it is not uploaded (and it spares hashing the file when checking an
        existing object). Afterwards the object is tagged public or not as
        ``public`` says. ``progress`` is called with the bytes sent per part.

        Two writers racing for the same new key are not excluded (S3 has no
        portable conditional write); callers serialize uploads of one key.
        """
        path = Path(path)
        if not path.is_file():
            raise S3Error(f"Cannot upload {path}: not a file")
        self.ensure_bucket(bucket)
        existing = self.object_info(bucket, key)
        if existing is not None and not overwrite:
            result = self._check_existing(path, existing, sha256)
        else:
            result = self._upload(path, bucket, key, sha256, progress)
        if public or result.skipped:
            # tagged only now: RGW ignores tags given at the start of a multipart
            # upload and drops them when the object is copied onto itself
            self.set_public(bucket, key, public)
        return result

    def _upload(
        self,
        path: Path,
        bucket: str,
        key: str,
        expected_sha256: str | None,
        progress: Callable[[int], None] | None,
    ) -> UploadResult:
        with open(path, "rb") as fd:
            before = _file_state(fd)
            size = before[0]
            part_size = part_size_for(size, self.settings.part_size)

            def check_read(total: int, sha256: str) -> None:
                """Refuse to finish an upload of bytes that are not the file's."""
                if total != size or _file_state(fd) != before:
                    raise UploadVerificationError(
                        f"{path} changed while it was uploaded; nothing was stored, upload it again"
                    )
                if expected_sha256 is not None and sha256 != expected_sha256:
                    raise UploadVerificationError(
                        f"SHA-256 of {path} is {sha256}, expected {expected_sha256}; "
                        "nothing was stored"
                    )

            if size > part_size:
                parts = iter(functools.partial(fd.read, part_size), b"")
                return self._put_multipart(parts, bucket, key, check_read, progress)
            data = fd.read(size + 1)  # one byte more reveals a file that grew
            result = self._put_single(data, bucket, key, check_read)
        if progress is not None:
            progress(result.size)
        return result

    def upload_stream_verified(
        self,
        chunks: Iterable[bytes],
        size: int,
        bucket: str,
        key: str,
        *,
        check: Callable[[int, str], None] | None = None,
        public: bool = False,
    ) -> UploadResult:
        """Upload a stream of ``size`` bytes that can be read only once, e.g. a download.

        Parts are sent while the stream arrives, with the checks of
        :meth:`upload_verified`. Before the object is completed, the number of
        bytes must equal ``size`` and ``check(size, sha256)`` must not raise:
        otherwise nothing is stored. The key must be free
        (:class:`ObjectConflictError` otherwise): a stream cannot be compared
        with an existing object without reading it twice.
        """
        self.ensure_bucket(bucket)
        if self.object_info(bucket, key) is not None:
            raise ObjectConflictError(f"s3://{bucket}/{key} already exists")
        part_size = part_size_for(size, self.settings.part_size)
        parts = _parts_of(_at_most(chunks, size), part_size)

        def check_read(total: int, sha256: str) -> None:
            if total != size:
                raise UploadVerificationError(
                    f"The stream for s3://{bucket}/{key} had {total} bytes, not {size}; "
                    "nothing was stored"
                )
            if check is not None:
                check(total, sha256)

        if size > part_size:
            result = self._put_multipart(parts, bucket, key, check_read, None)
        else:
            data = next(parts, b"") + next(parts, b"")  # a second part: the stream is too long
            result = self._put_single(data, bucket, key, check_read)
        if public:
            self.set_public(bucket, key, True)
        return result

    def _check_existing(self, path: Path, existing: ObjectInfo, sha256: str | None) -> UploadResult:
        where = f"s3://{existing.bucket}/{existing.key}"
        size = path.stat().st_size
        if existing.size != size:
            raise ObjectConflictError(
                f"{where} already exists with {existing.size} bytes, {path} has {size}; "
                "pass overwrite to replace it"
            )
        local_sha256 = sha256 or sha256_of_file(path)
        remote_sha256 = existing.sha256 or self.object_sha256(
            existing.bucket, existing.key, trust_metadata=False
        )
        if remote_sha256 != local_sha256:
            raise ObjectConflictError(
                f"{where} already exists with different content (SHA-256 {remote_sha256}) "
                f"than {path} (SHA-256 {local_sha256}); pass overwrite to replace it"
            )
        return UploadResult(
            bucket=existing.bucket,
            key=existing.key,
            size=size,
            sha256=local_sha256,
            etag=existing.etag,
            skipped=True,
        )

    def _put_single(self, data: bytes, bucket: str, key: str, check_read: Callable) -> UploadResult:
        sha256 = hashlib.sha256(data).hexdigest()
        check_read(len(data), sha256)
        size = len(data)
        md5 = hashlib.md5(data)
        with self._errors(f"upload s3://{bucket}/{key}"):
            self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
                Metadata={SHA256_METADATA_KEY: sha256},
            )
        self._verify(bucket, key, md5.hexdigest(), size, sha256)
        return UploadResult(bucket, key, size, sha256, md5.hexdigest())

    def _put_multipart(
        self,
        parts: Iterable[bytes],
        bucket: str,
        key: str,
        check_read: Callable,
        progress: Callable[[int], None] | None,
    ) -> UploadResult:
        with self._errors(f"start the upload of s3://{bucket}/{key}"):
            upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        try:
            sha256, digests, parts, total = self._send_parts(
                parts, bucket, key, upload_id, progress
            )
            check_read(total, sha256)
            with self._errors(f"complete the upload of s3://{bucket}/{key}"):
                self.client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self._abort(bucket, key, upload_id)
            raise
        etag = multipart_etag(digests)
        self._verify(bucket, key, etag, total, None)
        # the hash is known only after the last part was read: recorded now;
        # if that fails, the verified object stays and object_sha256 streams it
        self.record_sha256(bucket, key, sha256, total)
        return UploadResult(bucket, key, total, sha256, etag)

    def _send_parts(
        self,
        parts: Iterable[bytes],
        bucket: str,
        key: str,
        upload_id: str,
        progress: Callable[[int], None] | None,
    ) -> tuple[str, list[bytes], list[dict], int]:
        """Read the parts once, hash them, and send them concurrently.

        At most ``upload_concurrency`` parts are in flight, so memory stays at
        about ``part_size * (upload_concurrency + 1)`` whatever the file size.
        """
        sha256 = hashlib.sha256()
        digests: dict[int, bytes] = {}
        etags: dict[int, str] = {}
        total = 0
        in_flight: set[Future] = set()

        def send(number: int, data: bytes) -> int:
            md5 = hashlib.md5(data).digest()
            digests[number] = md5
            with self._errors(f"upload part {number} of s3://{bucket}/{key}"):
                answer = self.client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=base64.b64encode(md5).decode(),
                )
            etags[number] = answer["ETag"]
            return len(data)

        def collect(done: set[Future]) -> None:
            for future in done:
                sent = future.result()  # re-raises a failed part
                if progress is not None:
                    progress(sent)

        concurrency = self.settings.upload_concurrency
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="s3-part")
        try:
            for number, data in enumerate(parts, start=1):
                sha256.update(data)
                total += len(data)
                if len(in_flight) >= concurrency:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    collect(done)
                in_flight.add(pool.submit(send, number, data))
                del data
            done, in_flight = wait(in_flight)
            collect(done)
        finally:
            # on failure, the parts in flight (at most upload_concurrency) end
            # before the caller aborts: a part that lands after the abort could
            # leave data that no listing of open uploads shows
            pool.shutdown(wait=True, cancel_futures=True)
        order = sorted(etags)
        return (
            sha256.hexdigest(),
            [digests[n] for n in order],
            [{"PartNumber": n, "ETag": etags[n]} for n in order],
            total,
        )

    def _verify(self, bucket: str, key: str, etag: str, size: int, sha256: str | None) -> None:
        """HEAD the new object; remove it and raise if it is not what was sent."""
        info = self.object_info(bucket, key)
        problem = None
        if info is None:
            problem = "the object is missing after the upload"
        elif info.size != size:
            problem = f"the object has {info.size} bytes, the file {size}"
        elif info.etag != etag:
            problem = f"the object's ETag is {info.etag}, the file's {etag}"
        elif sha256 is not None and info.sha256 != sha256:
            problem = f"the object's recorded SHA-256 is {info.sha256}, the file's {sha256}"
        if problem:
            if info is not None:
                self.delete_object(bucket, key)
            raise UploadVerificationError(
                f"Upload of s3://{bucket}/{key} failed verification: {problem}; "
                "the object was removed, upload it again"
            )

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # the lifecycle rule and pruning clean up what is left
            log.exception(
                "Could not abort multipart upload %s of s3://%s/%s", upload_id, bucket, key
            )

    def stale_multipart_uploads(
        self, bucket: str, initiated_before: datetime.datetime
    ) -> list[StaleUpload]:
        """Unfinished multipart uploads of a bucket started before a moment."""
        stale = []
        with self._errors(f"list multipart uploads of {bucket}"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < initiated_before:
                        stale.append(
                            StaleUpload(
                                bucket, upload["Key"], upload["UploadId"], upload["Initiated"]
                            )
                        )
        return stale

    def prune_multipart_uploads(
        self, bucket: str, initiated_before: datetime.datetime, dry_run: bool = False
    ) -> list[StaleUpload]:
        """Abort the unfinished multipart uploads started before a moment."""
        stale = self.stale_multipart_uploads(bucket, initiated_before)
        if not dry_run:
            for upload in stale:
                with self._errors(f"abort upload {upload.upload_id} of s3://{bucket}/{upload.key}"):
                    self.client.abort_multipart_upload(
                        Bucket=bucket, Key=upload.key, UploadId=upload.upload_id
                    )
        return stale
