"""Presigned URLs, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import uuid

import botocore.auth
import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

from ...conftest import http, sha256_hex
from .helpers import RID


def test_presigned_url_allows_get_until_it_expires(store, bucket, random_file, monkeypatch):
    key = s3.object_key("resource", RID)
    path = random_file(MiB)
    store.upload_verified(path, bucket, key)

    url = store.presigned_get_url(bucket, key, expires_in=60, filename="cells.rtdc")
    answer = http.get(url, timeout=30)
    assert answer.status_code == 200
    assert answer.content == path.read_bytes()
    assert 'filename="cells.rtdc"' in answer.headers["Content-Disposition"]

    # a URL signed ten minutes ago with a one-minute expiry has expired
    signed_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: signed_at)
    expired = store.presigned_get_url(bucket, key, expires_in=60)
    answer = http.get(expired, timeout=30)
    assert answer.status_code == 403
    assert b"AccessDenied" in answer.content


def test_presigned_url_is_bound_to_its_key(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    other = s3.object_key("preview", RID)
    store.upload_verified(random_file(MiB, "a"), bucket, key)
    store.upload_verified(random_file(MiB, "b"), bucket, other)
    url = store.presigned_get_url(bucket, key, expires_in=60)
    tampered = url.replace("/resource/", "/preview/")
    assert http.get(tampered, timeout=30).status_code == 403


def test_presigned_multipart_upload_writes_only_its_parts(store):
    staging = store.ensure_staging()
    key = s3.object_key("resource", str(uuid.uuid4()))
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts of 5 MiB, 5 MiB, 2 MiB
    upload = store.presigned_upload(key, len(data), 60)
    assert upload.bucket == staging
    assert upload.url is None and len(upload.part_urls) == 3 and upload.part_size == 5 * MiB
    assert [number for number, _ in upload.part_urls] == [1, 2, 3]
    part_urls = [url for _, url in upload.part_urls]
    first = part_urls[0]
    assert http.put(first, data=data[: 4 * MiB]).status_code == 403  # not the signed size
    etags = []
    for number, url in enumerate(part_urls):
        answer = http.put(url, data=data[number * 5 * MiB : (number + 1) * 5 * MiB])
        assert answer.status_code == 200
        etags.append(answer.headers["ETag"])
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        for n, e in enumerate(etags, start=1)
    )
    body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>"
    assert http.post(upload.complete_url, data=body).status_code == 200
    info = store.object_info(staging, key)
    assert info.size == len(data)
    hashes = store.hash_object(staging, key, md5=True)
    assert (hashes.md5, hashes.sha256) == (hashlib.md5(data).hexdigest(), sha256_hex(data))
    # the upload is finished: its part URLs write nothing any more
    assert http.put(first, data=data[: 5 * MiB]).status_code == 404


def test_presigned_multipart_upload_can_be_aborted_by_its_url(store):
    staging = store.ensure_staging()
    key = s3.object_key("resource", str(uuid.uuid4()))
    upload = store.presigned_upload(key, 6 * MiB, 60)

    def open_uploads() -> list[str]:
        uploads = store.client.list_multipart_uploads(Bucket=staging).get("Uploads", [])
        return [u["UploadId"] for u in uploads if u["Key"] == key]

    assert open_uploads() == [upload.upload_id]
    assert http.delete(upload.abort_url).status_code == 204
    assert open_uploads() == []


def test_uploaded_parts_reads_every_page_of_list_parts(store):
    bucket = store.ensure_staging()
    key = s3.object_key("resource", str(uuid.uuid4()))
    upload = store.presigned_upload(key, 1100 * 5 * MiB, 60)

    def send(number: int) -> None:
        store.uploader.upload_part(
            Bucket=bucket, Key=key, UploadId=upload.upload_id, PartNumber=number, Body=b"x"
        )

    # ListParts answers at most 1000 parts per page; sent 8 at a time
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(1, 1003)))
    parts = store.uploaded_parts(bucket, key, upload.upload_id)
    assert sorted(parts) == list(range(1, 1003))
    assert all(size == 1 for _, size in parts.values())
    resumed = store.presigned_parts(key, 1100 * 5 * MiB, 5 * MiB, upload.upload_id, 60)
    # parts of the wrong size are sent again: here all of them
    assert len(resumed.part_urls) == 1100 and resumed.parts_done == []
    store.abort_upload(bucket, key, upload.upload_id)
    with pytest.raises(s3.UploadGoneError):
        store.uploaded_parts(bucket, key, upload.upload_id)
    store.abort_upload(bucket, key, upload.upload_id)  # gone already: fine
