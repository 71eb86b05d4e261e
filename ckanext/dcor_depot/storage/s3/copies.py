"""Verified server-side copies to another bucket (a dataset that moves to another circle).

Up to ``copy_object_max`` (S3's limit: 5 GiB) an object is copied with one CopyObject. Ceph RGW
makes that a shallow copy, in the same pool: the copy references the source's
data (1 GiB in 0.2 s here), keeps its ETag and metadata, and outlives the
source. It is checked by what the store says of it: its size, ETag and the
SHA-256 in its metadata must be the recorded ones; with ``rehash`` its bytes
are also read back and hashed. RGW also copies the source's tags whatever
``TaggingDirective`` says, so the copy is exactly as readable as the source
at that moment: callers copy under the dataset's lease.

Larger objects are copied part by part into a new multipart upload
(UploadPartCopy, several at once) while the source is read once, streamed:
the MD5 the store reports for each copied part must equal the MD5 of the same
bytes as read, and the SHA-256 of all the bytes must be the recorded one, else
the copy is aborted. Such a copy starts untagged, private.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from .client import SHA256_METADATA_KEY, MiB, ObjectInfo, S3Error, UploadVerificationError
from .fixity import multipart_etag
from .parts import UploadResult, part_size_for

#: Smallest part of a multipart copy: large parts mean few requests.
COPY_PART = 64 * MiB


class Copies:
    def copy_verified(
        self,
        source_bucket: str,
        key: str,
        bucket: str,
        sha256: str,
        size: int,
        etag: str | None = None,
        rehash: bool = False,
    ) -> UploadResult:
        """Copy ``s3://source_bucket/key`` to ``s3://bucket/key``, checked against the record.

        ``sha256``, ``size`` and ``etag`` are what is recorded of the object.
        Metadata, Content-Type and Content-Disposition go with the copy. A
        multipart copy (above ``settings.copy_object_max``) keeps an object left
        at the target by an interrupted run when its bytes hash to ``sha256``.
        """
        where = f"s3://{source_bucket}/{key} to s3://{bucket}/{key}"
        if etag and not rehash and self.shallow_copy(size):
            return self._copy_by_etag(source_bucket, key, bucket, sha256, size, etag, where)
        source = self.object_info(source_bucket, key)
        if source is None:
            raise S3Error(f"Cannot copy {where}: the source object is missing")
        if source.size != size:
            raise UploadVerificationError(
                f"Cannot copy {where}: the source has {source.size} bytes, {size} are recorded"
            )
        self.ensure_bucket(bucket)
        if self.shallow_copy(size):
            return self._copy_object(source, bucket, sha256, etag, rehash, where)
        existing = self.object_info(bucket, key)
        if existing is not None and existing.size == size and existing.sha256 == sha256:
            if self.hash_object(bucket, key).sha256 == sha256:
                return UploadResult(bucket, key, size, sha256, existing.etag, skipped=True)
        return self._copy_parts(source, bucket, sha256, where)

    def shallow_copy(self, size: int) -> bool:
        """Whether an object of ``size`` bytes is copied with one CopyObject (with its tags)."""
        return size <= self.settings.copy_object_max

    def _copy_object(
        self,
        source: ObjectInfo,
        bucket: str,
        sha256: str,
        etag: str | None,
        rehash: bool,
        where: str,
    ) -> UploadResult:
        with self._errors(f"copy {where}"):
            self.client.copy_object(
                Bucket=bucket,
                Key=source.key,
                CopySource={"Bucket": source.bucket, "Key": source.key},
            )
        copy = self.object_info(bucket, source.key)
        problem = None
        if copy is None:
            problem = "the copy is missing"
        elif copy.size != source.size:
            problem = f"the copy has {copy.size} bytes, {source.size} are recorded"
        elif etag and copy.etag != etag:
            problem = f"the copy's ETag is {copy.etag}, {etag} is recorded"
        elif copy.sha256 != sha256:
            problem = f"the copy's metadata says SHA-256 {copy.sha256}, {sha256} is recorded"
        elif rehash and (actual := self.hash_object(bucket, source.key).sha256) != sha256:
            problem = f"the copy's bytes have SHA-256 {actual}, {sha256} is recorded"
        if problem is not None:
            if copy is not None:
                self.delete_object(bucket, source.key)
            raise UploadVerificationError(f"Copy of {where} failed verification: {problem}")
        return UploadResult(bucket, source.key, copy.size, sha256, copy.etag)

    def _copy_by_etag(
        self,
        source_bucket: str,
        key: str,
        bucket: str,
        sha256: str,
        size: int,
        etag: str,
        where: str,
    ) -> UploadResult:
        """One CopyObject, checked by the ETag it answers (Ceph RGW's copy keeps the
        source's ETag, single or multipart): a copy with the recorded ETag holds the
        recorded bytes, with their metadata. No HEAD of the source or of the copy."""
        self.ensure_bucket(bucket)
        with self._errors(f"copy {where}"):
            try:
                answer = self.client.copy_object(
                    Bucket=bucket, Key=key, CopySource={"Bucket": source_bucket, "Key": key}
                )
            except self.client.exceptions.NoSuchKey:
                raise S3Error(f"Cannot copy {where}: the source object is missing") from None
        copied = answer.get("CopyObjectResult", {}).get("ETag", "").strip('"')
        if copied != etag.strip('"'):
            self.delete_object(bucket, key)
            raise UploadVerificationError(
                f"Copy of {where} failed verification: the copy's ETag is {copied}, "
                f"{etag} is recorded"
            )
        return UploadResult(bucket, key, size, sha256, copied)

    def _copy_parts(self, source: ObjectInfo, bucket: str, sha256: str, where: str) -> UploadResult:
        key, size = source.key, source.size
        part_size = part_size_for(size, max(self.settings.part_size, COPY_PART))
        ranges = [(start, min(size, start + part_size)) for start in range(0, size, part_size)]
        extra = {
            name: value
            for name, value in (
                ("ContentType", source.content_type),
                ("ContentDisposition", source.content_disposition),
            )
            if value
        }
        with self._errors(f"start the copy of {where}"):
            upload_id = self.client.create_multipart_upload(
                Bucket=bucket,
                Key=key,
                Metadata={**source.metadata, SHA256_METADATA_KEY: sha256},
                **extra,
            )["UploadId"]

        def copy_part(number: int) -> str:
            start, end = ranges[number - 1]
            with self._errors(f"copy part {number} of {where}"):
                answer = self.client.upload_part_copy(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": source.bucket, "Key": key},
                    CopySourceRange=f"bytes={start}-{end - 1}",
                )
            return answer["CopyPartResult"]["ETag"].strip('"')

        pool = ThreadPoolExecutor(self.settings.upload_concurrency, thread_name_prefix="s3-copy")
        try:
            copied = [pool.submit(copy_part, n) for n in range(1, len(ranges) + 1)]
            digests, actual = self._part_digests(source, ranges)
            etags = [future.result() for future in copied]
            problem = None
            if actual != sha256:
                problem = f"the source's bytes have SHA-256 {actual}, {sha256} is recorded"
            for number, (digest, etag) in enumerate(zip(digests, etags, strict=True), start=1):
                if problem is None and digest.hex() != etag:
                    problem = f"part {number} was copied with MD5 {etag}, read as {digest.hex()}"
            if problem:
                raise UploadVerificationError(f"Copy of {where} failed verification: {problem}")
            with self._errors(f"complete the copy of {where}"):
                self.client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [
                            {"PartNumber": n, "ETag": f'"{etag}"'}
                            for n, etag in enumerate(etags, start=1)
                        ]
                    },
                )
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(bucket, key, upload_id)
            raise
        pool.shutdown(wait=True)
        etag = multipart_etag(digests)
        self._verify(bucket, key, etag, size, sha256)
        return UploadResult(bucket, key, size, sha256, etag)

    def _part_digests(
        self, source: ObjectInfo, ranges: list[tuple[int, int]]
    ) -> tuple[list[bytes], str]:
        """MD5 of each range and SHA-256 of all of the source, read once in one stream."""
        sha256, digests = hashlib.sha256(), []
        md5, part, position = hashlib.md5(), 0, 0
        for chunk in self.read_object(source.bucket, source.key):
            sha256.update(chunk)
            while chunk:
                take = chunk[: ranges[part][1] - position]
                md5.update(take)
                position += len(take)
                chunk = chunk[len(take) :]
                if position == ranges[part][1]:
                    digests.append(md5.digest())
                    md5, part = hashlib.md5(), part + 1
        return digests, sha256.hexdigest()
