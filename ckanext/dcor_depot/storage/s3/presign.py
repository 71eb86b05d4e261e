"""Presigned URLs: downloads that name the file, uploads of one new object."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import re
import urllib.parse

from .client import MD5_METADATA_KEY, ObjectConflictError
from .parts import part_size_for


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
