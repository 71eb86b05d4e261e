"""Listing and pruning, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import datetime

from ckanext.dcor_depot.storage import s3

from .helpers import RID, open_uploads


def test_listing_and_object_info(store, bucket, random_file):
    keys = {s3.object_key(a, RID) for a in s3.ARTIFACTS}
    for number, key in enumerate(sorted(keys)):
        store.upload_verified(random_file(1000 + number, f"f{number}"), bucket, key)
    assert {o.key for o in store.iter_objects(bucket)} == keys
    assert {o.key for o in store.iter_objects(bucket, prefix="preview/")} == {
        s3.object_key("preview", RID)
    }
    assert store.object_info(bucket, "resource/nop/e/x") is None
    assert not store.object_exists(bucket, "resource/nop/e/x")
    assert bucket in store.list_buckets(prefix="dcor-test-")


def test_prune_stale_multipart_uploads(store, bucket):
    key = s3.object_key("resource", RID)
    store.client.create_multipart_upload(Bucket=bucket, Key=key)
    now = datetime.datetime.now(datetime.timezone.utc)

    assert store.prune_multipart_uploads(bucket, now - datetime.timedelta(days=1)) == []
    listed = store.prune_multipart_uploads(
        bucket, now + datetime.timedelta(minutes=5), dry_run=True
    )
    assert [u.key for u in listed] == [key]
    assert len(open_uploads(store, bucket)) == 1

    pruned = store.prune_multipart_uploads(bucket, now + datetime.timedelta(minutes=5))
    assert [u.key for u in pruned] == [key]
    assert open_uploads(store, bucket) == []
