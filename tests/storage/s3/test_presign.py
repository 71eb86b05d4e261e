"""Presigned URLs, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib

import botocore.auth
import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

from ...conftest import anonymous_status, http, sha256_hex
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


def test_presigned_multipart_upload_writes_only_its_parts_and_keeps_its_metadata(store, bucket):
    key = s3.object_key("resource", "abcdefgh-1234")
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts of 5 MiB, 5 MiB, 2 MiB
    md5 = hashlib.md5(data).hexdigest()
    upload = store.presigned_upload(bucket, key, len(data), 60, {"origin": "test"}, md5=md5)
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
    info = store.object_info(bucket, key)
    assert info.size == len(data)
    assert info.metadata == {"origin": "test", s3.MD5_METADATA_KEY: md5}
    hashes = store.hash_object(bucket, key, md5=True)
    assert (hashes.md5, hashes.sha256) == (md5, sha256_hex(data))
    # the upload is finished: its part URLs write nothing any more
    assert http.put(first, data=data[: 5 * MiB]).status_code == 404
    with pytest.raises(s3.ObjectConflictError):
        store.presigned_upload(bucket, key, 10, 60)


def test_presigned_multipart_upload_can_be_aborted_by_its_url(store, bucket):
    key = s3.object_key("resource", "abcdefgh-5678")
    upload = store.presigned_upload(bucket, key, 6 * MiB, 60)
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert http.delete(upload.abort_url).status_code == 204
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


SERVED = {
    "ContentType": "application/x-hdf5",
    "ContentDisposition": 'attachment; filename="c.rtdc"',
}
ALL_USERS = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        # signed with other values: Ceph RGW refuses the request
        ("x-amz-acl", "public-read", 403),
        ("x-amz-tagging", "public=true", 403),
        ("Content-Type", "text/html", 403),
        ("Content-Disposition", "inline", 403),
        # beside the signed ACL
        ("x-amz-grant-read", ALL_USERS, 400),
        ("x-amz-grant-full-control", ALL_USERS, 400),
        # accepted unsigned: the s3-sha256 job drops them (tests/logic/test_upload_route.py)
        ("x-amz-meta-evil", "1", 200),
        ("x-amz-website-redirect-location", "/evil", 200),
    ],
)
def test_a_single_put_grant_cannot_widen_access_or_change_how_it_is_served(
    store, bucket, header, value, status
):
    key = s3.object_key("resource", "abcdefgh-put1")
    data = b"<html><script>alert(1)</script></html>"
    upload = store.presigned_upload(bucket, key, len(data), 60, {"origin": "t"}, served=SERVED)
    assert upload.headers["x-amz-acl"] == "private" and upload.headers["x-amz-tagging"] == ""
    headers = {**upload.headers, header: value}
    answer = http.put(upload.url, data=data, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    assert anonymous_status(store.object_url(bucket, key)) == 403
    if status == 200:
        head = store.client.head_object(Bucket=bucket, Key=key)
        assert (head["ContentType"], head["ContentDisposition"]) == tuple(SERVED.values())
        assert store.client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == []
    else:
        assert not store.object_exists(bucket, key)
        # the grant's own headers still work
        assert http.put(upload.url, data=data, headers=upload.headers).status_code == 200


EVIL = {
    "x-amz-acl": "public-read",
    "x-amz-grant-read": ALL_USERS,
    "x-amz-tagging": "public=true",
    "Content-Type": "text/html",
    "Content-Disposition": "inline",
    "x-amz-meta-evil": "1",
    "x-amz-website-redirect-location": "/evil",
}


@pytest.mark.parametrize("header", EVIL)
def test_headers_on_parts_and_completion_change_nothing(store, bucket, header):
    """Ceph RGW accepts each of these headers on a part and on the completion (two of
    them together, an ACL and a grant, it refuses with 400) and applies none."""
    key = s3.object_key("resource", "abcdefgh-mp01")
    data = bytes(range(256)) * (24 * 1024)  # 6 MiB: parts of 5 MiB and 1 MiB
    upload = store.presigned_upload(bucket, key, len(data), 60, {"origin": "t"}, served=SERVED)
    evil = {header: EVIL[header]}
    parts = []
    for number, url in upload.part_urls:
        chunk = data[(number - 1) * 5 * MiB : number * 5 * MiB]
        answer = http.put(url, data=chunk, headers=evil, timeout=30)
        assert answer.status_code == 200, answer.text
        etag = answer.headers["ETag"]
        parts.append(f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>")
    body = f"<CompleteMultipartUpload>{''.join(parts)}</CompleteMultipartUpload>"
    answer = http.post(upload.complete_url, data=body, headers=evil, timeout=30)
    assert answer.status_code == 200 and "<Error>" not in answer.text, answer.text
    assert anonymous_status(store.object_url(bucket, key)) == 403
    head = store.client.head_object(Bucket=bucket, Key=key)
    assert (head["ContentType"], head["ContentDisposition"]) == tuple(SERVED.values())
    assert head["Metadata"] == {"origin": "t"}
    assert "WebsiteRedirectLocation" not in head
    assert store.client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == []
    grants = store.client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    assert [g["Grantee"]["Type"] for g in grants] == ["CanonicalUser"]


def test_uploaded_parts_reads_every_page_of_list_parts(store, bucket):
    key = s3.object_key("resource", "abcdefgh-page")
    upload = store.presigned_upload(bucket, key, 1100 * 5 * MiB, 60)

    def send(number: int) -> None:
        store.client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload.upload_id, PartNumber=number, Body=b"x"
        )

    # ListParts answers at most 1000 parts per page; sent 8 at a time
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(1, 1003)))
    parts = store.uploaded_parts(bucket, key, upload.upload_id)
    assert sorted(parts) == list(range(1, 1003))
    assert all(size == 1 for _, size in parts.values())
    resumed = store.presigned_parts(bucket, key, 1100 * 5 * MiB, 5 * MiB, upload.upload_id, 60)
    # parts of the wrong size are sent again: here all of them
    assert len(resumed.part_urls) == 1100 and resumed.parts_done == []
    store.abort_upload(bucket, key, upload.upload_id)
    with pytest.raises(s3.UploadGoneError):
        store.uploaded_parts(bucket, key, upload.upload_id)
    store.abort_upload(bucket, key, upload.upload_id)  # gone already: fine
