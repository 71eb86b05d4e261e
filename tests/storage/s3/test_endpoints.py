"""How the store is reached, against the real Ceph RADOS Gateway: https verified
against a private CA (the development stack's), plain http, and two addresses of
one gateway (CKAN's and the users')."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
import uuid

import certifi
import ckan.plugins.toolkit as tk
import pytest
import requests
import urllib3

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore

from ...conftest import anonymous_status, http, sha256_path
from .helpers import RID


def with_host(url: str, host: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{host}:{parts.port}").geturl()


@pytest.fixture
def two_addresses(store) -> ObjectStore:
    """The test store, its users reaching the same gateway as ``localhost``."""
    internal = store.settings.endpoint_url
    assert urllib.parse.urlsplit(internal).hostname == "127.0.0.1"
    public = with_host(internal, "localhost")
    return ObjectStore(dataclasses.replace(store.settings, public_endpoint_url=public))


def test_the_test_store_speaks_https_verified_against_its_private_ca(store, bucket):
    assert store.settings.endpoint_url.startswith("https://")
    ca_bundle = store.settings.ssl_verify
    assert isinstance(ca_bundle, str) and ca_bundle.endswith(".pem")
    # the system's CAs do not know the gateway's certificate: the client says what to check
    system = ObjectStore(dataclasses.replace(store.settings, ssl_verify=True))
    with pytest.raises(s3.S3ConnectionError, match="TLS to https://.* failed.*ssl_verify"):
        system.list_buckets()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(store.object_url(bucket, "x"), timeout=30, verify=certifi.where())
    # without verification it connects (only for a test installation)
    unverified = ObjectStore(dataclasses.replace(store.settings, ssl_verify=False))
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        assert bucket in unverified.list_buckets()


def test_plain_http_keeps_working(store, bucket, random_file):
    endpoint = tk.config["dcor_depot_dev.s3_http_endpoint_url"]
    assert endpoint.startswith("http://")
    plain = ObjectStore(dataclasses.replace(store.settings, endpoint_url=endpoint))
    key = s3.object_key("resource", RID)
    path = random_file(6 * MiB)  # two parts of 5 MiB in the tests
    result = plain.upload_verified(path, bucket, key)
    assert result.sha256 == sha256_path(path)
    url = plain.object_url(bucket, key)
    assert url.startswith(endpoint) and anonymous_status(url) == 403
    plain.set_public(bucket, key, True)
    answer = http.get(url, timeout=30)
    assert answer.status_code == 200 and answer.content == path.read_bytes()


def test_urls_for_users_carry_their_address_and_work_only_there(two_addresses, bucket, random_file):
    store = two_addresses
    public = store.settings.public_endpoint_url
    key = s3.object_key("resource", RID)
    path = random_file(MiB)
    store.upload_verified(path, bucket, key)

    url = store.presigned_get_url(bucket, key, expires_in=60)
    assert url.startswith(f"{public}/{bucket}/")
    answer = http.get(url, timeout=30)
    assert answer.status_code == 200 and answer.content == path.read_bytes()
    # signed for that host: the same URL at CKAN's address is refused
    assert http.get(with_host(url, "127.0.0.1"), timeout=30).status_code == 403
    # CKAN's own processes (the DC metadata job) read at CKAN's address
    internal = store.presigned_get_url(bucket, key, expires_in=60, internal=True)
    assert internal.startswith(store.settings.endpoint_url + "/")
    assert http.get(internal, timeout=30).content == path.read_bytes()

    object_url = store.object_url(bucket, key)
    assert object_url == f"{public}/{bucket}/{key}"
    for recorded in (object_url, with_host(object_url, "127.0.0.1")):
        assert store.bucket_of_url(recorded) == bucket
    assert store.bucket_of_url(f"https://elsewhere.example.org/{bucket}/{key}") is None
    store.set_public(bucket, key, True)
    assert http.get(object_url, timeout=30).content == path.read_bytes()


@pytest.mark.parametrize("size", [3000, 12 * MiB], ids=["single-put", "multipart"])
def test_upload_urls_for_users_carry_their_address_and_work_only_there(two_addresses, bucket, size):
    store = two_addresses
    key = s3.object_key("resource", str(uuid.uuid4()))  # staging is shared by the tests
    data = bytes(range(256)) * (size // 256)
    upload = store.presigned_upload(key, len(data), 60)
    urls = [upload.url] if upload.url else [url for _, url in upload.part_urls]
    urls += [upload.complete_url] if upload.complete_url else []
    assert all(url.startswith(store.settings.public_endpoint_url + "/") for url in urls)
    if upload.url:
        assert (
            http.put(
                with_host(upload.url, "127.0.0.1"), data=data, headers=upload.headers
            ).status_code
            == 403
        )
        assert http.put(upload.url, data=data, headers=upload.headers).status_code == 200
    else:
        etags = []
        for number, url in upload.part_urls:
            chunk = data[(number - 1) * upload.part_size : number * upload.part_size]
            assert http.put(with_host(url, "127.0.0.1"), data=chunk).status_code == 403
            answer = http.put(url, data=chunk)
            assert answer.status_code == 200
            etags.append((number, answer.headers["ETag"]))
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in etags
        )
        body = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>"
        assert http.post(upload.complete_url, data=body).status_code == 200
    staging = store.settings.staging_bucket
    stored = store.client.get_object(Bucket=staging, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
