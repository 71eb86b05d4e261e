"""Visibility of an object: the tag ``public=true`` that the bucket policy lets anyone read."""

from __future__ import annotations

import botocore.exceptions

from .client import S3Error, _is_missing

#: The tag that makes an object anonymously readable through the bucket policy.
PUBLIC_TAG = {"Key": "public", "Value": "true"}


class Visibility:
    def set_public(
        self, bucket: str, key: str, public: bool, current: list[dict] | None = None
    ) -> None:
        """Tag an object ``public=true`` (anonymously readable) or remove that tag
        (``current``: its tags, as :meth:`tags` read them just before)."""
        with self._errors(f"change visibility of s3://{bucket}/{key}"):
            if current is None:
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
        tags = self.tags(bucket, key)
        return None if tags is None else PUBLIC_TAG in tags

    def tags(self, bucket: str, key: str) -> list[dict] | None:
        """The object's tags; None when it does not exist."""
        with self._errors(f"read tags of s3://{bucket}/{key}"):
            try:
                return self.client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
