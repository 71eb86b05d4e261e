"""The S3 client: its settings, its errors in words a user can act on, and single objects."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import threading
from collections.abc import Iterator

import boto3
import botocore.exceptions
from botocore.config import Config

MiB = 1024**2
#: Object metadata key (``x-amz-meta-sha256``) holding the SHA-256 of the object.
SHA256_METADATA_KEY = "sha256"
#: Object metadata key holding the MD5 a client declared for a multipart upload.
MD5_METADATA_KEY = "md5"


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


class ObjectUnreadable(S3Error):
    """The store holds the object but answers 400 to a plain HEAD (an object written with
    a key of its client's, SSE-C, needs that key for every read)."""


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
    #: Verify the endpoint's TLS certificate: against the public CAs of certifi (True), the CA
    #: bundle at this path, or not at all (False).
    ssl_verify: bool | str = True
    #: Bucket name template with the placeholder ``{organization_id}``.
    bucket_name_template: str = "circle-{organization_id}"
    #: Days after which the store aborts an unfinished multipart upload.
    abort_incomplete_multipart_days: int = 7
    #: Part size of multipart uploads; files up to this size use one PUT.
    part_size: int = 16 * MiB
    #: Parts of one upload in flight at the same time.
    upload_concurrency: int = 4
    #: Objects up to this size are copied with one CopyObject (S3's limit: 5 GiB).
    copy_object_max: int = 5 * 1024**3
    #: The address users reach the store at, when it is not ``endpoint_url``:
    #: presigned URLs and object URLs carry it (None: ``endpoint_url``).
    public_endpoint_url: str | None = None
    #: Access key of the upload identity, which signs the upload URLs users get and may
    #: only write into ``staging_bucket`` (``staging.py``); None: no uploads by users.
    upload_access_key_id: str | None = None
    #: Secret of the upload identity; excluded from ``repr``.
    upload_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    #: The upload identity's bucket, where uploads wait for their registration.
    staging_bucket: str = "dcor-upload-staging"

    @property
    def users_endpoint_url(self) -> str:
        """The address in the URLs users get (presigned ones, object URLs)."""
        return self.public_endpoint_url or self.endpoint_url


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
    content_type: str | None = dataclasses.field(default=None, compare=False)
    content_disposition: str | None = dataclasses.field(default=None, compare=False)


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
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        # a connection closed or reset, a proxy that failed, a response cut off
        raise S3ConnectionError(
            f"Cannot {action}: the connection to the object store at {endpoint} failed "
            f"({type(exc).__name__}: {exc})"
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


class StoreClient:
    """The boto3 client of one S3 endpoint, and HEAD, DELETE and the URL of one object."""

    def __init__(self, settings: S3Settings, parallel_uploads: int = 1):
        self.settings = settings
        self._ready_buckets: set[str] = set()
        self._lock = threading.Lock()
        self.client = self._client(settings.endpoint_url, parallel_uploads)

    @functools.cached_property
    def signer(self):
        """The client that signs URLs for users: for the address they reach the store at.

        It only signs; SigV4 covers the host, so such a URL works at that
        address only. With no other address configured it is ``client``.
        """
        if self.settings.users_endpoint_url == self.settings.endpoint_url:
            return self.client
        return self._client(self.settings.users_endpoint_url, 1)

    def _client(self, endpoint_url: str, parallel_uploads: int, upload_identity: bool = False):
        """A boto3 client; with ``upload_identity`` one of the upload identity (``staging.py``)."""
        settings = self.settings
        session = boto3.session.Session(
            aws_access_key_id=settings.upload_access_key_id
            if upload_identity
            else settings.access_key_id,
            aws_secret_access_key=settings.upload_secret_access_key
            if upload_identity
            else settings.secret_access_key,
        )
        return session.client(
            "s3",
            endpoint_url=endpoint_url,
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

    def object_info(self, bucket: str, key: str) -> ObjectInfo | None:
        """HEAD an object; None when it (or its bucket) does not exist. Raises
        :class:`ObjectUnreadable` when the store cannot read it without a client's key."""
        with self._errors(f"look up s3://{bucket}/{key}"):
            try:
                head = self.client.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    return None
                if exc.response.get("Error", {}).get("Code") == "400":
                    raise ObjectUnreadable(
                        f"s3://{bucket}/{key} answers 400 Bad Request to a HEAD"
                    ) from None
                raise
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=head["ContentLength"],
            etag=head.get("ETag", "").strip('"'),
            sha256=head.get("Metadata", {}).get(SHA256_METADATA_KEY),
            last_modified=head.get("LastModified"),
            metadata=head.get("Metadata", {}),
            content_type=head.get("ContentType"),
            content_disposition=head.get("ContentDisposition"),
        )

    def object_exists(self, bucket: str, key: str) -> bool:
        return self.object_info(bucket, key) is not None

    def delete_object(self, bucket: str, key: str) -> None:
        with self._errors(f"delete s3://{bucket}/{key}"):
            self.client.delete_object(Bucket=bucket, Key=key)

    def object_url(self, bucket: str, key: str) -> str:
        """The object's URL for users (readable anonymously only while it is tagged public)."""
        return f"{self.settings.users_endpoint_url.rstrip('/')}/{bucket}/{key}"

    def bucket_of_url(self, url: str) -> str | None:
        """The bucket in an object URL made by ``object_url``, at either address of the store."""
        for endpoint in (self.settings.users_endpoint_url, self.settings.endpoint_url):
            prefix = endpoint.rstrip("/") + "/"
            if url.startswith(prefix):
                return url[len(prefix) :].split("/", 1)[0] or None
        return None
