"""What the tests of the S3 layer share: anonymous GETs, stored bytes, open uploads."""

from __future__ import annotations

import requests

from ckanext.dcor_depot.storage.s3 import ObjectStore

from ...conftest import http

RID = "7f4c0a52-1b4e-4c8e-9d6e-0123456789ab"


def anonymous_get(store: ObjectStore, bucket: str, key: str) -> requests.Response:
    return http.get(store.object_url(bucket, key), timeout=30)


def stored_bytes(store: ObjectStore, bucket: str, key: str) -> bytes:
    return store.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def open_uploads(store: ObjectStore, bucket: str) -> list:
    return store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def chunks_of(path, size: int = 1_000_003):
    """A file as a stream of odd-sized chunks, like a download."""
    with open(path, "rb") as fd:
        while chunk := fd.read(size):
            yield chunk
