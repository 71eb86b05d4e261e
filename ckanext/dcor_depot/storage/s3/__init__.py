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

Modules, by concern: ``names`` (bucket names, object keys), ``client`` (settings,
errors, the boto3 client, HEAD/DELETE of one object), ``buckets`` (creation,
bucket policy, lifecycle rule), ``parts`` and ``uploads`` (verified uploads),
``fixity`` (hashes, read-back checks), ``presign`` (presigned URLs),
``visibility`` (the public tag), ``listing`` (listing, pruning unfinished
uploads); ``store`` assembles :class:`ObjectStore` from them. Import from the
package, not from the modules.
"""

from .buckets import public_read_policy
from .client import (
    MD5_METADATA_KEY,
    SHA256_METADATA_KEY,
    MiB,
    ObjectConflictError,
    ObjectInfo,
    ObjectUnreadable,
    S3AuthError,
    S3ConnectionError,
    S3Error,
    S3Settings,
    UploadVerificationError,
)
from .fixity import (
    HASH_CONCURRENCY,
    HASH_PART,
    HASH_WINDOW,
    OBJECT_MISSING,
    STREAM_CHUNK,
    ObjectHashes,
    multipart_etag,
    sha256_of_file,
)
from .listing import StaleUpload
from .names import (
    ARTIFACTS,
    check_bucket_name,
    circle_bucket_name,
    circle_bucket_prefix,
    object_key,
    parse_object_key,
    resource_subpath,
)
from .parts import MAX_OBJECT_SIZE, MAX_PARTS, UploadResult, part_size_for
from .presign import PresignedUpload, UploadGoneError, content_disposition
from .staging import NoUploadIdentity, StagedObjectChanged, StagedObjectUnreadable
from .store import ObjectStore
from .visibility import PUBLIC_TAG

__all__ = [
    "ARTIFACTS",
    "HASH_CONCURRENCY",
    "HASH_PART",
    "HASH_WINDOW",
    "MAX_OBJECT_SIZE",
    "MAX_PARTS",
    "MD5_METADATA_KEY",
    "MiB",
    "NoUploadIdentity",
    "OBJECT_MISSING",
    "ObjectConflictError",
    "ObjectHashes",
    "ObjectInfo",
    "ObjectStore",
    "ObjectUnreadable",
    "PUBLIC_TAG",
    "PresignedUpload",
    "UploadGoneError",
    "S3AuthError",
    "S3ConnectionError",
    "S3Error",
    "S3Settings",
    "SHA256_METADATA_KEY",
    "STREAM_CHUNK",
    "StagedObjectChanged",
    "StagedObjectUnreadable",
    "StaleUpload",
    "UploadResult",
    "UploadVerificationError",
    "check_bucket_name",
    "circle_bucket_name",
    "circle_bucket_prefix",
    "content_disposition",
    "multipart_etag",
    "object_key",
    "parse_object_key",
    "part_size_for",
    "public_read_policy",
    "resource_subpath",
    "sha256_of_file",
]
