"""The client's errors, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import dataclasses
import hashlib
import traceback

import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import ObjectStore


def test_wrong_credentials_give_a_clear_error(store, bucket):
    secret = "not-the-secret-" + hashlib.sha1(b"x").hexdigest()
    bad = ObjectStore(dataclasses.replace(store.settings, secret_access_key=secret))
    with pytest.raises(s3.S3AuthError, match="rejected the credentials") as error:
        bad.list_buckets()
    assert "access_key_id" in str(error.value)
    # neither the message nor the whole chained traceback nor the settings show the secret
    assert secret not in "".join(traceback.format_exception(error.value))
    assert secret not in repr(bad.settings)
    with pytest.raises(s3.S3AuthError, match="check dcor_object_store.access_key_id"):
        bad.object_info(bucket, "resource/abc/def/g")


def test_unreachable_endpoint_gives_a_clear_error(store):
    settings = dataclasses.replace(store.settings, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(s3.S3ConnectionError, match="unreachable"):
        ObjectStore(settings).list_buckets()
