"""Sending bytes so that the object provably equals them: one PUT, or parts with
``Content-MD5`` sent concurrently, then the object's size and ETag checked."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from .client import SHA256_METADATA_KEY, MiB, UploadVerificationError
from .fixity import multipart_etag

log = logging.getLogger(__name__)

#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000
#: The largest object S3 allows (5 TiB).
MAX_OBJECT_SIZE = 5 * 1024**4


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


def part_size_for(size: int, minimum: int) -> int:
    """The part size for a file: ``minimum``, grown in MiB steps to stay within 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    if needed <= minimum:
        return minimum
    return -(-needed // MiB) * MiB


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


class Parts:
    def _put_single(
        self, data: bytes, bucket: str, key: str, check_read: Callable, headers: dict[str, str]
    ) -> UploadResult:
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
                **headers,
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
        headers: dict[str, str],
    ) -> UploadResult:
        with self._errors(f"start the upload of s3://{bucket}/{key}"):
            upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, **headers)[
                "UploadId"
            ]
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
