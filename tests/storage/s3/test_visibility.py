"""The public tag and the bucket policy, against the real Ceph RADOS Gateway."""

from __future__ import annotations

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

from .helpers import RID, anonymous_get


def test_anonymous_get_follows_public_tag(store, bucket, rtdc_file):
    path = rtdc_file()
    key = s3.object_key("resource", RID)
    store.upload_verified(path, bucket, key)

    assert anonymous_get(store, bucket, key).status_code == 403
    assert not store.is_public(bucket, key)

    store.set_public(bucket, key, True)
    answer = anonymous_get(store, bucket, key)
    assert answer.status_code == 200
    assert answer.content == path.read_bytes()

    store.set_public(bucket, key, False)
    assert anonymous_get(store, bucket, key).status_code == 403


def test_upload_public_from_the_start(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    store.upload_verified(random_file(6 * MiB), bucket, key, public=True)
    assert anonymous_get(store, bucket, key).status_code == 200


def test_visibility_after_upload_is_what_was_asked(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    path = random_file(2 * store.settings.part_size)
    store.upload_verified(path, bucket, key, public=True)
    assert anonymous_get(store, bucket, key).status_code == 200
    # a skipped upload still applies the visibility
    assert store.upload_verified(path, bucket, key, public=False).skipped
    assert anonymous_get(store, bucket, key).status_code == 403
    # an overwrite keeps a public object public when asked
    store.upload_verified(path, bucket, key, public=True, overwrite=True)
    assert anonymous_get(store, bucket, key).status_code == 200
