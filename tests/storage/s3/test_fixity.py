"""SHA-256 in object metadata, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import hashlib
import os

import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB, fixity

from ...conftest import sha256_hex
from .helpers import RID


def test_record_sha256_keeps_the_other_metadata(store, bucket):
    store.client.put_object(Bucket=bucket, Key="k", Body=b"abc", Metadata={"origin": "test"})
    store.record_sha256(bucket, "k", sha256_hex(b"abc"), 3)
    info = store.object_info(bucket, "k")
    assert info.metadata == {"origin": "test", "sha256": sha256_hex(b"abc")}


def test_existing_object_without_metadata_is_hashed_before_skipping(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    path = random_file(MiB)
    store.client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    assert store.object_info(bucket, key).sha256 is None
    assert store.object_sha256(bucket, key) == s3.sha256_of_file(path)
    assert store.upload_verified(path, bucket, key).skipped


@pytest.fixture
def small_parts(monkeypatch):
    """hash_object in ranged GETs of 1 MiB, two at a time, two parts held: a few MiB
    take several GETs and wait for the window."""
    monkeypatch.setattr(fixity, "HASH_PART", MiB)
    monkeypatch.setattr(fixity, "HASH_CONCURRENCY", 2)
    monkeypatch.setattr(fixity, "HASH_WINDOW", 2)


def test_object_of_several_parts_hashes_to_its_bytes(store, bucket, small_parts, monkeypatch):
    data = os.urandom(4 * MiB + 12345)
    store.client.put_object(Bucket=bucket, Key="k", Body=data)
    ranges = []
    get_object = store.client.get_object

    def recording(**kwargs):
        ranges.append(kwargs.get("Range"))
        return get_object(**kwargs)

    monkeypatch.setattr(store.client, "get_object", recording)
    hashes = store.hash_object(bucket, "k", md5=True)
    assert hashes == s3.ObjectHashes(
        len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    )
    assert len(ranges) == 5


def test_object_replaced_while_read_is_an_error(store, bucket, small_parts, monkeypatch):
    store.client.put_object(Bucket=bucket, Key="k", Body=os.urandom(4 * MiB))
    read_range = store._read_range

    def replace_after_first_part(bucket, key, etag, start, end):
        part = read_range(bucket, key, etag, start, end)
        if start == 0:  # same size, other bytes: only the ETag tells
            store.client.put_object(Bucket=bucket, Key=key, Body=os.urandom(4 * MiB))
        return part

    monkeypatch.setattr(store, "_read_range", replace_after_first_part)
    with pytest.raises(s3.S3Error, match="changed while it was read"):
        store.hash_object(bucket, "k")


def test_short_range_is_an_error(store, bucket, small_parts, monkeypatch):
    store.client.put_object(Bucket=bucket, Key="k", Body=os.urandom(3 * MiB))
    get_object = store.client.get_object

    def one_byte_short(**kwargs):
        first, last = kwargs["Range"].removeprefix("bytes=").split("-")
        return get_object(**{**kwargs, "Range": f"bytes={first}-{int(last) - 1}"})

    monkeypatch.setattr(store.client, "get_object", one_byte_short)
    with pytest.raises(s3.S3Error, match="gave 1048575 bytes, expected 1048576; try again"):
        store.hash_object(bucket, "k")


def test_missing_object_is_an_error(store, bucket):
    with pytest.raises(s3.S3Error, match=f"s3://{bucket}/missing: the object does not exist"):
        store.hash_object(bucket, "missing")
