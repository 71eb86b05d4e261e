"""The S3 layer against the real Ceph RADOS Gateway."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import traceback

import botocore.auth
import pytest
import requests

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore

from ..conftest import sha256_hex

RID = "7f4c0a52-1b4e-4c8e-9d6e-0123456789ab"


def anonymous_get(store: ObjectStore, bucket: str, key: str) -> requests.Response:
    return requests.get(f"{store.settings.endpoint_url}/{bucket}/{key}", timeout=30)


def stored_bytes(store: ObjectStore, bucket: str, key: str) -> bytes:
    return store.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def open_uploads(store: ObjectStore, bucket: str) -> list:
    return store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_object_key_layout():
    assert s3.object_key("resource", RID) == f"resource/7f4/c0a/{RID[6:]}"
    assert s3.object_key("condensed", RID).startswith("condensed/7f4/c0a/")
    assert s3.object_key("preview", RID).startswith("preview/7f4/c0a/")


@pytest.mark.parametrize(
    "artifact, rid",
    [
        ("thumbnail", RID),
        ("resource", "../../etc"),
        ("resource", "abc"),
        ("resource", "ABCDEF-GHIJ"),
    ],
)
def test_object_key_refuses_bad_input(artifact, rid):
    with pytest.raises(ValueError):
        s3.object_key(artifact, rid)


def test_circle_bucket_name_from_template():
    assert s3.circle_bucket_name("circle-{organization_id}", "abc-123") == "circle-abc-123"
    with pytest.raises(ValueError, match="placeholder"):
        s3.circle_bucket_name("circle", "abc")
    with pytest.raises(ValueError, match="not a valid S3 bucket name"):
        s3.circle_bucket_name("Circle_{organization_id}", "abc")


def test_new_bucket_gets_policy_and_lifecycle(store, bucket):
    policy = store.client.get_bucket_policy(Bucket=bucket)["Policy"]
    assert "s3:ExistingObjectTag/public" in policy
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    days = store.settings.abort_incomplete_multipart_days
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == days


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


@pytest.mark.parametrize("extra", [None, 0, 1], ids=["empty", "one-part", "one-part-plus-one"])
def test_upload_sizes_around_the_part_boundary(store, bucket, random_file, extra):
    part = store.settings.part_size
    size = 0 if extra is None else part + extra
    path = random_file(size)
    data = path.read_bytes()
    key = s3.object_key("resource", RID)

    result = store.upload_verified(path, bucket, key)

    assert result.size == size and not result.skipped
    assert result.sha256 == sha256_hex(data)
    assert stored_bytes(store, bucket, key) == data
    info = store.object_info(bucket, key)
    assert info.sha256 == sha256_hex(data)
    assert info.etag == result.etag
    # one request up to one part, multipart beyond
    assert info.etag.endswith("-2") == (extra == 1)
    assert open_uploads(store, bucket) == []


def test_large_upload_is_verified(store, bucket, random_file):
    path = random_file(300 * MiB)
    local = s3.sha256_of_file(path)
    key = s3.object_key("resource", RID)
    sent = []

    result = store.upload_verified(path, bucket, key, progress=sent.append)

    assert result.sha256 == local
    assert sum(sent) == 300 * MiB
    assert store.object_info(bucket, key).size == 300 * MiB
    # the stored bytes, re-read from the server, hash to the file's SHA-256
    assert store.object_sha256(bucket, key, trust_metadata=False) == local
    assert store.object_sha256(bucket, key) == local


def test_corrupted_part_fails_and_leaves_nothing(store, bucket, random_file):
    """A part whose bytes change after its MD5 was taken is refused by the server."""
    path = random_file(3 * store.settings.part_size)
    key = s3.object_key("resource", RID)

    def corrupt_second_part(params, **kwargs):
        if params.get("PartNumber") == 2:
            body = bytearray(params["Body"])
            body[1000] ^= 0xFF
            params["Body"] = bytes(body)

    store.client.meta.events.register("provide-client-params.s3.UploadPart", corrupt_second_part)
    try:
        with pytest.raises(s3.S3Error, match="BadDigest|InvalidDigest"):
            store.upload_verified(path, bucket, key)
    finally:
        store.client.meta.events.unregister(
            "provide-client-params.s3.UploadPart", corrupt_second_part
        )
    assert store.object_info(bucket, key) is None
    assert open_uploads(store, bucket) == []


def test_interrupted_upload_aborts_its_multipart_upload(store, bucket, random_file):
    path = random_file(4 * store.settings.part_size)
    key = s3.object_key("resource", RID)

    def interrupt(sent):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.upload_verified(path, bucket, key, progress=interrupt)
    assert store.object_info(bucket, key) is None
    assert open_uploads(store, bucket) == []


def test_existing_object_is_checked_and_never_overwritten(store, bucket, random_file, tmp_path):
    key = s3.object_key("resource", RID)
    first = random_file(2 * MiB, "first.bin")
    store.upload_verified(first, bucket, key)

    again = store.upload_verified(first, bucket, key)
    assert again.skipped and again.sha256 == s3.sha256_of_file(first)

    other = random_file(2 * MiB, "other.bin")
    with pytest.raises(s3.ObjectConflictError, match="already exists with different content"):
        store.upload_verified(other, bucket, key)
    assert stored_bytes(store, bucket, key) == first.read_bytes()
    with pytest.raises(s3.ObjectConflictError, match=f"already exists with {2 * MiB} bytes"):
        store.upload_verified(random_file(MiB, "smaller.bin"), bucket, key)

    replaced = store.upload_verified(other, bucket, key, overwrite=True)
    assert not replaced.skipped
    assert stored_bytes(store, bucket, key) == other.read_bytes()


def test_same_size_object_with_other_content_is_a_conflict(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    path = random_file(MiB)
    other = bytearray(path.read_bytes())
    other[-1] ^= 0xFF
    store.client.put_object(Bucket=bucket, Key=key, Body=bytes(other))  # no SHA-256 metadata
    with pytest.raises(s3.ObjectConflictError, match="different content"):
        store.upload_verified(path, bucket, key)
    assert stored_bytes(store, bucket, key) == bytes(other)


@pytest.mark.parametrize("change", ["rewrite", "append"])
def test_file_changed_during_upload_stores_nothing(store, bucket, random_file, change):
    path = random_file(3 * store.settings.part_size)
    key = s3.object_key("resource", RID)

    def change_file(sent):
        if change == "rewrite":
            with open(path, "r+b") as fd:
                fd.write(b"changed")
        else:
            with open(path, "ab") as fd:
                fd.write(b"more")

    with pytest.raises(s3.UploadVerificationError, match="changed while it was uploaded"):
        store.upload_verified(path, bucket, key, progress=change_file)
    assert store.object_info(bucket, key) is None
    assert open_uploads(store, bucket) == []


def test_failed_overwrite_keeps_the_old_object(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    old = random_file(2 * store.settings.part_size, "old.bin")
    store.upload_verified(old, bucket, key)
    new = random_file(3 * store.settings.part_size, "new.bin")
    with pytest.raises(s3.UploadVerificationError, match="expected"):
        store.upload_verified(new, bucket, key, overwrite=True, sha256="0" * 64)
    assert stored_bytes(store, bucket, key) == old.read_bytes()
    assert open_uploads(store, bucket) == []


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


def test_existing_object_without_metadata_is_hashed_before_skipping(store, bucket, random_file):
    key = s3.object_key("resource", RID)
    path = random_file(MiB)
    store.client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    assert store.object_info(bucket, key).sha256 is None
    assert store.object_sha256(bucket, key) == s3.sha256_of_file(path)
    assert store.upload_verified(path, bucket, key).skipped


@pytest.mark.parametrize("parts", [0.5, 2], ids=["single", "multipart"])
def test_wrong_expected_sha256_stores_nothing(store, bucket, random_file, parts):
    key = s3.object_key("resource", RID)
    path = random_file(int(parts * store.settings.part_size))
    with pytest.raises(s3.UploadVerificationError, match="expected"):
        store.upload_verified(path, bucket, key, sha256="0" * 64)
    assert store.object_info(bucket, key) is None
    assert open_uploads(store, bucket) == []


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


def test_part_size_grows_to_stay_within_the_part_limit():
    assert s3.part_size_for(10 * MiB, 16 * MiB) == 16 * MiB
    size = 200 * 1024 * MiB  # 200 GiB
    part = s3.part_size_for(size, 16 * MiB)
    assert part % MiB == 0 and -(-size // part) <= s3.MAX_PARTS


def chunks_of(path, size: int = 1_000_003):
    """A file as a stream of odd-sized chunks, like a download."""
    with open(path, "rb") as fd:
        while chunk := fd.read(size):
            yield chunk


@pytest.mark.parametrize("parts", [0.5, 3.2])
def test_stream_upload_stores_the_stream(store, bucket, random_file, parts):
    path = random_file(int(parts * store.settings.part_size))
    data = path.read_bytes()
    seen = []
    result = store.upload_stream_verified(
        chunks_of(path), len(data), bucket, "k", check=lambda n, sha: seen.append((n, sha))
    )
    assert seen == [(len(data), sha256_hex(data))]
    assert (result.size, result.sha256) == (len(data), sha256_hex(data))
    assert stored_bytes(store, bucket, "k") == data
    info = store.object_info(bucket, "k")
    assert info.sha256 == sha256_hex(data)
    assert anonymous_get(store, bucket, "k").status_code == 403


@pytest.mark.parametrize("parts", [0.5, 3.2])
@pytest.mark.parametrize("declared_change", [-1, 1])
def test_stream_of_another_length_stores_nothing(
    store, bucket, random_file, parts, declared_change
):
    path = random_file(int(parts * store.settings.part_size))
    size = path.stat().st_size
    with pytest.raises(s3.UploadVerificationError, match=f"not {size + declared_change}"):
        store.upload_stream_verified(chunks_of(path), size + declared_change, bucket, "k")
    assert not store.object_exists(bucket, "k")
    assert open_uploads(store, bucket) == []


@pytest.mark.parametrize("parts", [0.5, 3.2])
def test_stream_refused_by_the_check_stores_nothing(store, bucket, random_file, parts):
    path = random_file(int(parts * store.settings.part_size))

    def check(size, sha256):
        raise ValueError("MD5 differs")

    with pytest.raises(ValueError, match="MD5 differs"):
        store.upload_stream_verified(chunks_of(path), path.stat().st_size, bucket, "k", check=check)
    assert not store.object_exists(bucket, "k")
    assert open_uploads(store, bucket) == []


def test_stream_never_replaces_an_object(store, bucket, random_file):
    path = random_file(1000)
    store.upload_verified(path, bucket, "k")
    other = random_file(1000, "other.bin")
    with pytest.raises(s3.ObjectConflictError, match="already exists"):
        store.upload_stream_verified(chunks_of(other), 1000, bucket, "k")
    assert stored_bytes(store, bucket, "k") == path.read_bytes()


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


def test_record_sha256_keeps_the_other_metadata(store, bucket):
    store.client.put_object(Bucket=bucket, Key="k", Body=b"abc", Metadata={"origin": "test"})
    store.record_sha256(bucket, "k", sha256_hex(b"abc"), 3)
    info = store.object_info(bucket, "k")
    assert info.metadata == {"origin": "test", "sha256": sha256_hex(b"abc")}
