"""Verified uploads: of a file read once, and of a stream that can be read only once."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from .client import ObjectConflictError, ObjectInfo, S3Error, UploadVerificationError
from .fixity import sha256_of_file
from .parts import UploadResult, _parts_of, part_size_for

log = logging.getLogger(__name__)


def _at_most(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The chunks, up to one byte more than ``size`` (enough to tell that a stream is too long)."""
    left = size + 1
    for chunk in chunks:
        yield chunk[:left]
        left -= len(chunk)
        if left <= 0:
            return


def _file_state(fd: BinaryIO) -> tuple[int, int, int, int]:
    """Size, modification times and inode: what changes when a file is rewritten."""
    stat = os.fstat(fd.fileno())
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


class Uploads:
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
        headers: Mapping[str, str] | None = None,
    ) -> UploadResult:
        """Upload a file so that the object provably equals it.

        The bucket is created on first use. An existing object is never
        replaced unless ``overwrite``: if its size and SHA-256 equal the
        file's, the upload is skipped; otherwise :class:`ObjectConflictError`.
        ``sha256`` is the file's expected SHA-256: a file that does not match
        it is not uploaded (and it spares hashing the file when checking an
        existing object). Afterwards the object is tagged public or not as
        ``public`` says. ``progress`` is called with the bytes sent per part.
        ``headers``: how the object is served (``ContentType``,
        ``ContentDisposition``), stored with a new object.

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
            result = self._upload(path, bucket, key, sha256, progress, dict(headers or {}))
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
        headers: dict[str, str],
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
                return self._put_multipart(parts, bucket, key, check_read, progress, headers)
            data = fd.read(size + 1)  # one byte more reveals a file that grew
            result = self._put_single(data, bucket, key, check_read, headers)
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
        headers: Mapping[str, str] | None = None,
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
            result = self._put_multipart(parts, bucket, key, check_read, None, dict(headers or {}))
        else:
            data = next(parts, b"") + next(parts, b"")  # a second part: the stream is too long
            result = self._put_single(data, bucket, key, check_read, dict(headers or {}))
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
