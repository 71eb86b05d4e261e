"""Presigned URLs, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import datetime
import hashlib

import botocore.auth
import pytest
import requests

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

from ...conftest import sha256_hex
from .helpers import RID


def test_presigned_url_allows_get_until_it_expires(store, bucket, random_file, monkeypatch):
    key = s3.object_key("resource", RID)
    path = random_file(MiB)
    store.upload_verified(path, bucket, key)

    url = store.presigned_get_url(bucket, key, expires_in=60, filename="cells.rtdc")
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    assert answer.content == path.read_bytes()
    assert 'filename="cells.rtdc"' in answer.headers["Content-Disposition"]

    # a URL signed ten minutes ago with a one-minute expiry has expired
    signed_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: signed_at)
    expired = store.presigned_get_url(bucket, key, expires_in=60)
    answer = requests.get(expired, timeout=30)
    assert answer.status_code == 403
    assert b"AccessDenied" in answer.content


def test_presigned_url_is_bound_to_its_key(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    other = s3.object_key("preview", RID)
    store.upload_verified(random_file(MiB, "a"), bucket, key)
    store.upload_verified(random_file(MiB, "b"), bucket, other)
    url = store.presigned_get_url(bucket, key, expires_in=60)
    tampered = url.replace("/resource/", "/preview/")
    assert requests.get(tampered, timeout=30).status_code == 403


def test_presigned_multipart_upload_writes_only_its_parts_and_keeps_its_metadata(store, bucket):
    key = s3.object_key("resource", "abcdefgh-1234")
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts of 5 MiB, 5 MiB, 2 MiB
    md5 = hashlib.md5(data).hexdigest()
    upload = store.presigned_upload(bucket, key, len(data), 60, {"origin": "test"}, md5=md5)
    assert upload.url is None and len(upload.part_urls) == 3 and upload.part_size == 5 * MiB
    first = upload.part_urls[0]
    assert requests.put(first, data=data[: 4 * MiB]).status_code == 403  # not the signed size
    etags = []
    for number, url in enumerate(upload.part_urls):
        answer = requests.put(url, data=data[number * 5 * MiB : (number + 1) * 5 * MiB])
        assert answer.status_code == 200
        etags.append(answer.headers["ETag"])
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        for n, e in enumerate(etags, start=1)
    )
    body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>"
    assert requests.post(upload.complete_url, data=body).status_code == 200
    info = store.object_info(bucket, key)
    assert info.size == len(data)
    assert info.metadata == {"origin": "test", s3.MD5_METADATA_KEY: md5}
    hashes = store.hash_object(bucket, key, md5=True)
    assert (hashes.md5, hashes.sha256) == (md5, sha256_hex(data))
    # the upload is finished: its part URLs write nothing any more
    assert requests.put(first, data=data[: 5 * MiB]).status_code == 404
    with pytest.raises(s3.ObjectConflictError):
        store.presigned_upload(bucket, key, 10, 60)


def test_presigned_multipart_upload_can_be_aborted_by_its_url(store, bucket):
    key = s3.object_key("resource", "abcdefgh-5678")
    upload = store.presigned_upload(bucket, key, 6 * MiB, 60)
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert requests.delete(upload.abort_url).status_code == 204
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
