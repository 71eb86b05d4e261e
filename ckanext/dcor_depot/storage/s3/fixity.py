"""Hashes of files and objects: SHA-256 in object metadata, read-back checks."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import botocore.exceptions

from .client import SHA256_METADATA_KEY, MiB, S3Error, UploadVerificationError, _is_missing

#: Chunk size for streaming reads (hashing a file or an object).
STREAM_CHUNK = 4 * MiB
#: Ranged GETs of hash_object: 4 MiB was slower, 16 MiB no faster with twice the memory.
HASH_PART = 8 * MiB
#: GETs in flight: 6 or 8 were no faster, 4 leave room in the pool (upload_concurrency + 4).
HASH_CONCURRENCY = 4
#: Parts fetched or waiting to be hashed (memory: this x HASH_PART), so hashing never stalls GETs.
HASH_WINDOW = 2 * HASH_CONCURRENCY


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
        """Size and SHA-256 (with ``md5`` also the MD5) of an object's bytes, read once.

        The bytes come in ranged GETs of :data:`HASH_PART`, several at once,
        each pinned to the ETag that HEAD gave: an object replaced while it is
        read is an :class:`S3Error`, not the hash of a mix of two objects.
        """
        info = self.object_info(bucket, key)
        if info is None:
            raise S3Error(
                f"Cannot hash s3://{bucket}/{key}: the object does not exist; "
                "check the bucket and the key"
            )
        sha256, size = hashlib.sha256(), 0
        md5_digest = hashlib.md5() if md5 else None
        for part in self._read_parts(bucket, key, info.etag, info.size):
            sha256.update(part)
            if md5_digest is not None:
                md5_digest.update(part)
            size += len(part)
        return ObjectHashes(
            size, sha256.hexdigest(), md5_digest.hexdigest() if md5_digest else None
        )

    def _read_parts(self, bucket: str, key: str, etag: str, size: int) -> Iterator[bytes]:
        """The object's bytes in parts of :data:`HASH_PART`, in order, fetched in parallel.

        At most :data:`HASH_WINDOW` parts are fetched or held at once, so
        memory does not grow with the object. When a part fails, the parts
        not yet started are cancelled and the error is raised once the
        started ones (at most :data:`HASH_CONCURRENCY`) have ended.
        """
        starts = range(0, size, HASH_PART)
        if len(starts) <= 1:
            if size:
                yield self._read_range(bucket, key, etag, 0, size)
            return
        pool = ThreadPoolExecutor(HASH_CONCURRENCY, thread_name_prefix="s3-hash")
        window: collections.deque[Future] = collections.deque()
        try:
            for start in starts:
                if len(window) >= HASH_WINDOW:
                    yield window.popleft().result()
                end = min(start + HASH_PART, size)
                window.append(pool.submit(self._read_range, bucket, key, etag, start, end))
            while window:
                yield window.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _read_range(self, bucket: str, key: str, etag: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of the object, if its ETag is still ``etag``."""
        where = f"s3://{bucket}/{key}"
        with self._errors(f"read bytes {start}-{end - 1} of {where}"):
            try:
                answer = self.client.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=f'"{etag}"'
                )
                data = answer["Body"].read()
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    raise S3Error(
                        f"{where} changed while it was read (its ETag is no longer {etag}); "
                        "hash it again"
                    ) from exc
                if _is_missing(exc):
                    raise S3Error(
                        f"{where} was deleted while it was read; check whether that was meant"
                    ) from exc
                raise
            except (
                botocore.exceptions.IncompleteReadError,
                botocore.exceptions.ResponseStreamingError,
            ) as exc:
                raise S3Error(
                    f"Reading bytes {start}-{end - 1} of {where} ended early ({exc}); try again"
                ) from exc
        if len(data) != end - start:
            raise S3Error(
                f"Reading bytes {start}-{end - 1} of {where} gave {len(data)} bytes, "
                f"expected {end - start}; try again"
            )
        return data

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
