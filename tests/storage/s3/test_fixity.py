"""SHA-256 in object metadata, against the real Ceph RADOS Gateway."""

from __future__ import annotations

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

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
