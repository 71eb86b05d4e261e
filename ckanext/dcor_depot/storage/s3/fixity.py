"""Hashes of files and objects: SHA-256 in object metadata, read-back checks."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .client import SHA256_METADATA_KEY, MiB, S3Error, UploadVerificationError

#: Chunk size for streaming reads (hashing a file or an object).
STREAM_CHUNK = 4 * MiB


@dataclasses.dataclass(frozen=True)
class ObjectHashes:
    """What streaming an object's bytes tells."""

    size: int
    sha256: str
    #: Only when asked for: MD5 costs CPU that a SHA-256 check does not need.
    md5: str | None = None


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


#: What :meth:`ObjectStore.fixity_problem` says of an object that does not exist.
OBJECT_MISSING = "the object is missing"


class Fixity:
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

    def record_sha256(
        self,
        bucket: str,
        key: str,
        sha256: str,
        size: int,
        headers: Mapping[str, str] | None = None,
        keep: Iterable[str] | None = None,
    ) -> None:
        """Store the SHA-256 in an object's metadata, keeping its other metadata
        (``keep``: only these keys of it).

        ``headers`` (``ContentType``, ``ContentDisposition``) replace how the
        object is served; those not given are kept. What else a client may
        have set (an ACL, tags, ``x-amz-website-redirect-location``) is not
        copied. Copying the object onto
        itself replaces its metadata; Ceph RGW does this without copying data
        and keeps the ETag (AWS S3 refuses such a copy above 5 GB). RGW drops
        the object's tags with it: callers set the visibility afterwards.
        """
        info = self.object_info(bucket, key)
        if info is None:
            raise S3Error(f"Object s3://{bucket}/{key} does not exist")
        metadata = {k: v for k, v in info.metadata.items() if keep is None or k in set(keep)}
        served = {
            "ContentType": info.content_type,
            "ContentDisposition": info.content_disposition,
            **(headers or {}),
        }
        with self._errors(f"record the SHA-256 of s3://{bucket}/{key}"):
            self.client.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                Metadata={**metadata, SHA256_METADATA_KEY: sha256},
                MetadataDirective="REPLACE",
                **{name: value for name, value in served.items() if value},
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
