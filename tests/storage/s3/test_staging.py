"""The upload staging area, against the real Ceph RADOS Gateway: what the upload identity
may do, what every kind of URL it signs makes the store do whatever a client adds to
the request, and what a registration's copy keeps of it (the README's table in
"Uploading large files straight to S3")."""

from __future__ import annotations

import hashlib
import json
import uuid

import botocore.exceptions
import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB, StagedObjectChanged
from ckanext.dcor_depot.storage.s3.staging import staging_policy

from ...conftest import http

SECRET = b"the bytes of a private file of another circle"
PUBLIC = b"the bytes of a public file"
ALL_USERS = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'


def new_key() -> str:
    return s3.object_key("resource", str(uuid.uuid4()))


@pytest.fixture
def staging(store) -> str:
    return store.ensure_staging()


@pytest.fixture
def circle(store, bucket):
    """A circle bucket with a private object and one tagged public."""
    secret, public = new_key(), new_key()
    store.client.put_object(Bucket=bucket, Key=secret, Body=SECRET)
    store.client.put_object(Bucket=bucket, Key=public, Body=PUBLIC)
    store.set_public(bucket, public, True)
    return bucket, secret, public


def anonymous(store, bucket: str, key: str) -> int:
    return http.get(store.object_url(bucket, key), timeout=30).status_code


def staged(store, staging: str, key: str) -> bytes | None:
    """The bytes of a staged object as the extension reads them; None when there is none."""
    try:
        return store.client.get_object(Bucket=staging, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchKey", exc
        return None


def code(call) -> str:
    """The store's answer to a call: "ok" or its error code."""
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"]
    return "ok"


def test_the_upload_identity_can_do_nothing_but_write_into_staging(store, staging, circle):
    bucket, secret, public = circle
    uploader, extension = store.uploader, store.client
    key = new_key()
    assert code(lambda: uploader.put_object(Bucket=staging, Key=key, Body=b"data")) == "ok"
    upload = uploader.create_multipart_upload(Bucket=staging, Key=key)["UploadId"]
    abort = {"Bucket": staging, "Key": key, "UploadId": upload}
    # with its own keys, more than any URL of it can ask: everything else is refused
    tags = {"TagSet": [{"Key": "public", "Value": "true"}]}
    refused = {
        "read": lambda: uploader.get_object(Bucket=staging, Key=key),
        "head": lambda: uploader.head_object(Bucket=staging, Key=key),
        "list": lambda: uploader.list_objects_v2(Bucket=staging),
        "list uploads": lambda: uploader.list_multipart_uploads(Bucket=staging),
        "list parts": lambda: uploader.list_parts(**abort),
        "delete": lambda: uploader.delete_object(Bucket=staging, Key=key),
        "tag": lambda: uploader.put_object_tagging(Bucket=staging, Key=key, Tagging=tags),
        "object ACL": lambda: uploader.put_object_acl(Bucket=staging, Key=key, ACL="public-read"),
        "read the ACL": lambda: uploader.get_object_acl(Bucket=staging, Key=key),
        "bucket policy": lambda: uploader.put_bucket_policy(Bucket=staging, Policy="{}"),
        "delete the policy": lambda: uploader.delete_bucket_policy(Bucket=staging),
        "bucket ACL": lambda: uploader.put_bucket_acl(Bucket=staging, ACL="public-read"),
        "public access block": lambda: uploader.delete_public_access_block(Bucket=staging),
        "lifecycle": lambda: uploader.delete_bucket_lifecycle(Bucket=staging),
        "CORS": lambda: uploader.put_bucket_cors(
            Bucket=staging,
            CORSConfiguration={"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]},
        ),
        "versioning": lambda: uploader.put_bucket_versioning(
            Bucket=staging, VersioningConfiguration={"Status": "Enabled"}
        ),
        "delete the bucket": lambda: uploader.delete_bucket(Bucket=staging),
        "copy a private object": lambda: uploader.copy_object(
            Bucket=staging, Key=new_key(), CopySource={"Bucket": bucket, "Key": secret}
        ),
        "copy a staged object": lambda: uploader.copy_object(
            Bucket=staging, Key=new_key(), CopySource={"Bucket": staging, "Key": key}
        ),
        "read a circle's object": lambda: uploader.get_object(Bucket=bucket, Key=secret),
        "write a circle's bucket": lambda: uploader.put_object(Bucket=bucket, Key=new_key()),
        "delete in a circle's bucket": lambda: uploader.delete_object(Bucket=bucket, Key=secret),
        "tag in a circle's bucket": lambda: uploader.put_object_tagging(
            Bucket=bucket, Key=secret, Tagging=tags
        ),
    }
    answers = {what: code(call) for what, call in refused.items()}
    assert {what for what, answer in answers.items() if answer == "ok"} == set(), answers
    assert code(lambda: uploader.abort_multipart_upload(**abort)) == "ok"
    # the extension's identity reads, lists and removes what is staged
    assert store.client.get_object(Bucket=staging, Key=key)["Body"].read() == b"data"
    assert key in {o["Key"] for o in extension.list_objects_v2(Bucket=staging)["Contents"]}
    assert code(lambda: extension.delete_object(Bucket=staging, Key=key)) == "ok"
    # the set-up is there once: a new process reads the policy and changes nothing
    fresh = s3.ObjectStore(store.settings)
    assert fresh.ensure_staging() == staging
    policy = json.loads(extension.get_bucket_policy(Bucket=staging)["Policy"])
    owner = extension.list_buckets()["Owner"]["ID"]
    assert policy == staging_policy(staging, owner, uploader.list_buckets()["Owner"]["ID"])


#: What a client can add to a PUT, and whether Ceph RGW refuses the request with it.
ADDITIONS = {
    "copy a private object": ("x-amz-copy-source", "{bucket}/{secret}", True),
    "copy a staged object": ("x-amz-copy-source", "{staging}/{other}", True),
    "ACL public-read": ("x-amz-acl", "public-read", False),
    "ACL public-read-write": ("x-amz-acl", "public-read-write", False),
    "grant read to all users": ("x-amz-grant-read", ALL_USERS, False),
    "grant full control to all users": ("x-amz-grant-full-control", ALL_USERS, False),
    "tag public=true": ("x-amz-tagging", "public=true", False),
    "website redirect": ("x-amz-website-redirect-location", "https://evil.example.org/", False),
    "metadata": ("x-amz-meta-dcor-dataset-id", "another-dataset", False),
    "served as HTML": ("Content-Type", "text/html", False),
    "storage class": ("x-amz-storage-class", "GLACIER", True),
    "object lock": ("x-amz-object-lock-mode", "GOVERNANCE", True),
}


@pytest.mark.parametrize("addition", ADDITIONS)
def test_a_put_url_does_nothing_but_write_its_staged_key_whatever_is_added(
    store, staging, circle, addition
):
    """Both kinds of single-PUT URL: the route's (signed with If-None-Match and
    Content-MD5) and a bare one (Content-Length only, as DCOR-Aid sends it)."""
    bucket, secret, public = circle
    other = new_key()
    store.uploader.put_object(Bucket=staging, Key=other, Body=b"another upload")
    header, value, refused = ADDITIONS[addition]
    value = value.format(bucket=bucket, secret=secret, staging=staging, other=other)
    data = b"the bytes of the file"
    md5 = hashlib.md5(data).hexdigest()
    for kind, options in (("route", {"md5": md5}), ("bare", {"write_once": False})):
        key = new_key()
        upload = store.presigned_upload(key, len(data), 600, **options)
        answer = http.put(upload.url, data=data, headers={**upload.headers, header: value})
        assert (answer.status_code >= 400) == refused, (kind, answer.status_code, answer.text)
        held = staged(store, staging, key)
        # whatever the store took, it holds the client's bytes or nothing: never another
        # object's, and nobody but the extension may read, write or delete them
        assert held == (None if refused else data), kind
        assert anonymous(store, staging, key) == 403, kind
        assert http.delete(store.object_url(staging, key)).status_code == 403, kind
        assert http.put(store.object_url(staging, key), data=b"x").status_code == 403, kind


def test_a_put_url_with_another_method_key_bucket_or_query_is_refused(store, staging, bucket):
    data = b"the bytes of the file"
    key = new_key()
    upload = store.presigned_upload(key, len(data), 600, md5=hashlib.md5(data).hexdigest())
    url, headers = upload.url, upload.headers
    assert http.put(url, data=data, headers=headers).status_code == 200
    assert http.put(url, data=data, headers=headers).status_code == 412  # written once
    for method in ("GET", "HEAD", "DELETE", "POST"):
        assert http.request(method, url, headers=headers).status_code == 403, method
    assert http.put(url.replace(key, new_key()), data=data, headers=headers).status_code == 403
    elsewhere = url.replace(f"/{staging}/", f"/{bucket}/")
    assert http.put(elsewhere, data=data, headers=headers).status_code == 403
    for query in ("acl", "tagging", "policy", "uploads"):
        sep = "&" if "?" in url else "?"
        assert http.put(f"{url}{sep}{query}", data=data, headers=headers).status_code == 403
    assert http.put(url, data=data + b"x", headers=headers).status_code == 403  # more bytes
    # a bare URL (Content-Length only) may write its key again: the registration copies
    # only what it checked (test_the_registration_copy_keeps_nothing_a_client_added)
    bare = store.presigned_upload(new_key(), len(data), 600, write_once=False)
    assert http.put(bare.url, data=data).status_code == 200
    assert http.put(bare.url, data=data).status_code == 200


def test_part_complete_and_abort_urls_do_nothing_else(store, staging, circle):
    bucket, secret, public = circle
    key, size = new_key(), 6 * MiB  # two parts of 5 MiB and 1 MiB
    upload = store.presigned_upload(key, size, 600)
    (first, first_url), (second, second_url) = upload.part_urls
    data = bytes(range(256)) * (size // 256)
    # a part may not be a copy (UploadPartCopy) of anything, nor larger than signed
    copies = {
        "x-amz-copy-source": f"{bucket}/{secret}",
        "x-amz-copy-source-range": f"bytes=0-{len(SECRET) - 1}",
    }
    assert http.put(second_url, data=SECRET, headers=copies).status_code == 403
    assert http.put(first_url, data=data[: 5 * MiB + 1]).status_code == 403
    acl = {"x-amz-acl": "public-read", "x-amz-tagging": "public=true"}
    etags = []
    for url, part in ((first_url, data[: 5 * MiB]), (second_url, data[5 * MiB :])):
        answer = http.put(url, data=part, headers=acl)
        assert answer.status_code == 200
        etags.append(answer.headers["ETag"])
    for method in ("GET", "DELETE"):
        assert http.request(method, first_url).status_code == 403
    # completion with headers that would publish the object: no effect
    body = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        for n, e in zip((first, second), etags, strict=True)
    )
    body += "</CompleteMultipartUpload>"
    grants = {"x-amz-acl": "public-read", "x-amz-grant-read": ALL_USERS}
    assert http.post(upload.complete_url, data=body, headers=grants).status_code == 200
    assert staged(store, staging, key) == data
    assert anonymous(store, staging, key) == 403
    # the abort URL aborts its upload only: not another one, not an object
    other = store.presigned_upload(new_key(), size, 600)
    assert http.delete(other.abort_url.replace(other.upload_id, upload.upload_id)).status_code == (
        403
    )
    assert http.delete(other.abort_url).status_code == 204
    with pytest.raises(s3.UploadGoneError):
        store.uploaded_parts(staging, other.key, other.upload_id)
    assert staged(store, staging, key) == data


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
def test_headers_on_parts_and_completion_change_nothing(store, staging, bucket, header):
    """Ceph RGW accepts each of these on a part and on the completion and applies none
    that lasts: the completed object is not readable by anybody but the extension, and
    its copy into a circle bucket has the extension's metadata, ACL and tags only."""
    data = bytes(range(256)) * (24 * 1024)  # 6 MiB: parts of 5 MiB and 1 MiB
    served = {"ContentType": "application/x-hdf5", "ContentDisposition": "attachment"}
    evil = {header: EVIL[header]}
    key = new_key()
    upload = store.presigned_upload(key, len(data), 60)
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
    assert anonymous(store, staging, key) == 403
    target = new_key()
    store.copy_staged(key, store.object_info(staging, key), bucket, target, {}, served)
    head = store.client.head_object(Bucket=bucket, Key=target)
    assert (head["ContentType"], head["ContentDisposition"]) == tuple(served.values())
    assert head["Metadata"] == {} and "WebsiteRedirectLocation" not in head
    assert store.client.get_object_tagging(Bucket=bucket, Key=target).get("TagSet", []) == []
    grants = store.client.get_object_acl(Bucket=bucket, Key=target)["Grants"]
    assert [g["Grantee"]["Type"] for g in grants] == ["CanonicalUser"]
    assert anonymous(store, bucket, target) == 403


def test_the_registration_copy_keeps_nothing_a_client_added(store, staging, circle):
    bucket, secret, public = circle
    data = b"a measurement"
    key = new_key()
    upload = store.presigned_upload(key, len(data), 600, write_once=False)
    added = {
        "x-amz-tagging": "public=true",
        "x-amz-acl": "public-read",
        "x-amz-website-redirect-location": "https://evil.example.org/",
        "x-amz-meta-dcor-dataset-id": "another-dataset",
        "Content-Type": "text/html",
    }
    assert http.put(upload.url, data=data, headers=added).status_code == 200
    info = store.object_info(staging, key)
    target = new_key()
    served = {
        "ContentType": "application/x-hdf5",
        "ContentDisposition": 'attachment; filename="cells.rtdc"',
    }
    sent = []

    def count(model, **kwargs):
        sent.append(model.name)

    store.client.meta.events.register("before-call.s3", count)
    try:
        store.copy_staged(key, info, bucket, target, {"dcor-dataset-id": "mine"}, served)
    finally:
        store.client.meta.events.unregister("before-call.s3", count)
    # checked by the ETag CopyObject answers: no HEAD of the copy
    assert "HeadObject" not in sent and sent.count("CopyObject") == 1
    head = store.client.head_object(Bucket=bucket, Key=target)
    assert head["Metadata"] == {"dcor-dataset-id": "mine"}
    assert "WebsiteRedirectLocation" not in head
    assert (head["ContentType"], head["ContentDisposition"]) == tuple(served.values())
    assert store.client.get_object_tagging(Bucket=bucket, Key=target).get("TagSet", []) == []
    grants = store.client.get_object_acl(Bucket=bucket, Key=target)["Grants"]
    assert [g["Grantee"].get("URI") for g in grants] == [None]  # the owner only
    assert anonymous(store, bucket, target) == 403
    assert store.client.get_object(Bucket=bucket, Key=target)["Body"].read() == data
    assert staged(store, staging, key) == data  # kept until its grant expires (the prune)

    # a staged key written again after it was checked is not copied
    key = new_key()
    upload = store.presigned_upload(key, len(data), 600, write_once=False)
    assert http.put(upload.url, data=data).status_code == 200
    checked = store.object_info(staging, key)
    assert http.put(upload.url, data=b"X" * len(data)).status_code == 200
    target = new_key()
    with pytest.raises(StagedObjectChanged, match="written again"):
        store.copy_staged(key, checked, bucket, target, {}, served)
    assert store.object_info(bucket, target) is None  # the copy of other bytes is gone
