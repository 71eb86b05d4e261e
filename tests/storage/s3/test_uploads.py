"""Verified uploads of files and streams, against the real Ceph RADOS Gateway."""

from __future__ import annotations

import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

from ...conftest import sha256_hex
from .helpers import RID, anonymous_get, chunks_of, open_uploads, stored_bytes


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


@pytest.mark.parametrize("parts", [0.5, 2], ids=["single", "multipart"])
def test_wrong_expected_sha256_stores_nothing(store, bucket, random_file, parts):
    key = s3.object_key("resource", RID)
    path = random_file(int(parts * store.settings.part_size))
    with pytest.raises(s3.UploadVerificationError, match="expected"):
        store.upload_verified(path, bucket, key, sha256="0" * 64)
    assert store.object_info(bucket, key) is None
    assert open_uploads(store, bucket) == []


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
