"""Presigned URLs: downloads that name the file, uploads of one new object into staging."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import re
import urllib.parse

from .client import S3Error
from .parts import part_size_for


@dataclasses.dataclass(frozen=True)
class PresignedUpload:
    """URLs that let a client without S3 credentials write one new object.

    Single PUT (``upload_id`` None): PUT the whole file to ``url`` with
    ``headers``. Multipart: PUT part N (``part_size`` bytes, the last one
    shorter) to its URL in ``part_urls``, then POST the list of the parts'
    ETags (those of ``parts_done`` included) to ``complete_url`` (or DELETE
    ``abort_url`` to give up). ``complete``: the object exists already.
    """

    bucket: str
    key: str
    size: int
    expires_at: datetime.datetime
    part_size: int
    url: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    upload_id: str | None = None
    #: ``(part number, URL)`` of each part still to send
    part_urls: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    #: ``(part number, ETag, size)`` of each part the store holds already
    parts_done: list[tuple[int, str, int]] = dataclasses.field(default_factory=list)
    complete_url: str | None = None
    abort_url: str | None = None
    complete: bool = False


class UploadGoneError(S3Error):
    """The store no longer knows the multipart upload (aborted, or completed)."""


def content_disposition(filename: str) -> str:
    """``attachment`` with a file name browsers keep, non-ASCII ones too (RFC 6266)."""
    name = re.sub(r'[\x00-\x1f\x7f"\\/]', "_", filename)
    fallback = name.encode("ascii", "replace").decode().replace("?", "_")
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    return value


class Presigning:
    def presigned_get_url(
        self,
        bucket: str,
        key: str,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
        internal: bool = False,
    ) -> str:
        """A URL that allows GET of one object for ``expires_in`` seconds.

        With ``filename`` the answer says to save it under that name; with
        ``content_type`` the answer has that Content-Type. The URL is for users
        (at ``public_endpoint_url``), ``internal`` ones for CKAN's own processes.
        """
        params = {"Bucket": bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type:
            params["ResponseContentType"] = content_type
        with self._errors(f"sign a download URL for s3://{bucket}/{key}"):
            signer = self.client if internal else self.signer
            return signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)

    def presigned_upload(
        self, key: str, size: int, expires_in: int, md5: str | None = None, write_once: bool = True
    ) -> PresignedUpload:
        """URLs with which a client writes ``size`` bytes to one new object in the staging
        bucket, and nothing else (``staging.py``): signed by the upload identity.

        Each URL is signed for its method, key, upload id, part number and
        Content-Length, so it cannot write another key or more bytes. Up to
        the part size the file goes in one PUT; with ``write_once`` it is
        signed with ``If-None-Match: *`` (a second PUT is refused) and, given
        the file's hex ``md5``, with ``Content-MD5`` (the store refuses other
        bytes); without, the PUT carries nothing but Content-Length (as
        DCOR-Aid sends it). Larger files get a multipart upload, created here
        by the upload identity. What a client adds unsigned has no effect that
        outlives the staging bucket: the registration copies the object with
        the extension's own metadata, ACL and tags (:meth:`copy_staged`).
        """
        part_size, upload_id = self.start_upload(key, size)
        return self.sign_upload(key, size, part_size, upload_id, expires_in, md5, write_once)

    def sign_upload(
        self,
        key: str,
        size: int,
        part_size: int,
        upload_id: str | None,
        expires_in: int,
        md5: str | None = None,
        write_once: bool = True,
    ) -> PresignedUpload:
        """The URLs of an upload :meth:`start_upload` began: one PUT when it made no
        multipart upload, else every part's URL (of a new upload: the store is not asked)."""
        if upload_id is None:
            return self.presigned_put(key, size, expires_in, md5, write_once)
        return self.presigned_parts(key, size, part_size, upload_id, expires_in, new=True)

    def start_upload(
        self, key: str, size: int, part_size: int | None = None
    ) -> tuple[int, str | None]:
        """The part size of an upload of ``size`` bytes to ``key`` in the staging bucket
        (``part_size``: the client's layout), and the id of the multipart upload created
        for it (None: one PUT); nothing is signed yet (:meth:`presigned_put`,
        :meth:`presigned_parts` with ``new``)."""
        bucket = self.ensure_staging()
        part_size = part_size or part_size_for(size, self.settings.part_size)
        if size <= part_size:
            return size, None
        with self._errors(f"prepare the upload of s3://{bucket}/{key}"):
            upload_id = self.uploader.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        return part_size, upload_id

    def presigned_put(
        self,
        key: str,
        size: int,
        expires_in: int,
        md5: str | None = None,
        write_once: bool = True,
    ) -> PresignedUpload:
        """The single PUT of :meth:`presigned_upload` (also again, for a resumed upload)."""
        bucket = self.ensure_staging()
        headers: dict[str, str] = {}
        params: dict[str, object] = {"ContentLength": size}
        if write_once:
            params["IfNoneMatch"] = headers["If-None-Match"] = "*"
        if md5 and write_once:
            params["ContentMD5"] = headers["Content-MD5"] = base64.b64encode(
                bytes.fromhex(md5)
            ).decode()
        with self._errors(f"sign the upload of s3://{bucket}/{key}"):
            url = self._sign(bucket, key, expires_in, "put_object", **params)
        return PresignedUpload(
            bucket, key, size, _expiry(expires_in), part_size=size, url=url, headers=headers
        )

    def presigned_parts(
        self,
        key: str,
        size: int,
        part_size: int,
        upload_id: str,
        expires_in: int,
        new: bool = False,
    ) -> PresignedUpload:
        """URLs for the parts of a multipart upload in the staging bucket that the store
        does not hold yet (all of them for a ``new`` one, without asking the store), and
        to complete or abort it.

        Raises :class:`UploadGoneError` when the store no longer knows the upload.
        """
        bucket = self.ensure_staging()
        done = {} if new else self.uploaded_parts(bucket, key, upload_id)
        count = -(-size // part_size)

        def length(number: int) -> int:
            return min(part_size, size - (number - 1) * part_size)

        # a part of another length (never signed so) is sent again
        held = [(n, etag, got) for n, (etag, got) in sorted(done.items()) if got == length(n)]
        held_numbers = {n for n, _, _ in held}
        with self._errors(f"sign the parts of s3://{bucket}/{key}"):
            part_urls = [
                (
                    number,
                    self._sign(
                        bucket,
                        key,
                        expires_in,
                        "upload_part",
                        UploadId=upload_id,
                        PartNumber=number,
                        ContentLength=length(number),
                    ),
                )
                for number in range(1, count + 1)
                if number not in held_numbers
            ]
            complete_url = self._sign(
                bucket, key, expires_in, "complete_multipart_upload", "POST", UploadId=upload_id
            )
            abort_url = self._sign(
                bucket, key, expires_in, "abort_multipart_upload", "DELETE", UploadId=upload_id
            )
        return PresignedUpload(
            bucket,
            key,
            size,
            _expiry(expires_in),
            part_size=part_size,
            upload_id=upload_id,
            part_urls=part_urls,
            parts_done=held,
            complete_url=complete_url,
            abort_url=abort_url,
        )

    def uploaded_parts(self, bucket: str, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """``{part number: (ETag, size)}`` of a multipart upload, every page of ListParts.

        Raises :class:`UploadGoneError` when the store no longer knows the upload.
        """
        parts: dict[int, tuple[str, int]] = {}
        try:
            with self._errors(f"list the parts of the upload of s3://{bucket}/{key}"):
                pages = self.client.get_paginator("list_parts").paginate(
                    Bucket=bucket, Key=key, UploadId=upload_id
                )
                for page in pages:
                    for part in page.get("Parts", []):
                        parts[part["PartNumber"]] = (part["ETag"], part["Size"])
        except S3Error as exc:
            # RGW answers NoSuchKey for an upload it no longer knows, AWS NoSuchUpload
            if any(code in str(exc) for code in (": NoSuchUpload:", ": NoSuchKey:")):
                raise UploadGoneError(
                    f"The store no longer knows the multipart upload of s3://{bucket}/{key} "
                    "(aborted or completed)"
                ) from exc
            raise
        return parts

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort a multipart upload (its parts are deleted); fine if the store forgot it."""
        try:
            self.uploaded_parts(bucket, key, upload_id)
        except UploadGoneError:
            return
        with self._errors(f"abort the upload {upload_id} of s3://{bucket}/{key}"):
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    def _sign(
        self,
        bucket: str,
        key: str,
        expires_in: int,
        operation: str,
        http_method: str | None = None,
        **params,
    ) -> str:
        """An upload URL for users, signed by the upload identity (``staging.py``)."""
        self.require_uploader()
        return self.upload_signer.generate_presigned_url(
            operation,
            Params={"Bucket": bucket, "Key": key, **params},
            ExpiresIn=expires_in,
            HttpMethod=http_method,
        )


def _expiry(expires_in: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
