"""The direct-to-S3 upload route, used as a client would: the action over CKAN's
API, plain ``requests`` against the presigned URLs (the README's own client
code), ``resource_create``, a real worker, then what the user and the operator
see in S3, on the resource, in the backup folder and at the download URL."""

from __future__ import annotations

import base64
import datetime
import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import botocore.auth
import ckan.model as model
import ckan.plugins.toolkit as tk
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from ckan.tests import factories, helpers

from ckanext.dcor_depot import config, placement
from ckanext.dcor_depot.cli import dcor_prune_orphaned_objects, run_jobs_dcor_depot
from ckanext.dcor_depot.jobs.backup import backup_resource
from ckanext.dcor_depot.jobs.checksum import record_object_sha256
from ckanext.dcor_depot.jobs.queue import job_id
from ckanext.dcor_depot.model import depot_files, file_table, grants
from ckanext.dcor_depot.operations import prune as prune_operations
from ckanext.dcor_depot.storage.depot import DepotError
from ckanext.dcor_depot.storage.s3 import MAX_OBJECT_SIZE, MiB, object_key

from ..conftest import anonymous_status, demo, derived_ini, http, sha256_path

GiB = 1024**3

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

README = Path(__file__).parents[2] / "README.md"


def readme_client() -> dict:
    """The functions of the README's client example (``upload_to_dcor``, ``send_to_s3``)."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    # requests as with REQUESTS_CA_BUNDLE set to the test store's CA (not in the
    # environment: the workers started later must trust it on their own)
    namespace["requests"] = http
    return namespace


@pytest.fixture
def circle():
    """alice administers the circle and its private dataset; carol is a member; bob is not."""
    alice = factories.User(name="alice")
    carol = factories.User(name="carol")
    org = factories.Organization(
        name="hl60-lab",
        users=[{"name": "alice", "capacity": "admin"}, {"name": "carol", "capacity": "member"}],
    )
    dataset = factories.Dataset(name="hl60", owner_org=org["id"], private=True, user=alice)
    return {"alice": alice, "carol": carol, "bob": factories.User(name="bob")}, org, dataset


def token(user: dict) -> str:
    return factories.APIToken(user=user["name"])["token"]


def api(app, name: str, data: dict, user: dict | None = None):
    headers = {"Authorization": token(user)} if user else {}
    return app.post(f"/api/action/{name}", json=data, headers=headers)


def grant(app, user, dataset, path: Path, **extra) -> dict:
    data = {"package_id": dataset["id"], "name": path.name, "size": path.stat().st_size}
    answer = api(app, "dcor_depot_upload_urls", {**data, **extra}, user)
    assert answer.status_code == 200, answer.body
    return answer.json["result"]


def uploaded(app, user, dataset, path: Path, **extra) -> dict:
    """An upload through the route, sent with the README's client code and registered."""
    answer = grant(app, user, dataset, path, **extra)
    readme_client()["send_to_s3"](answer["upload"], path)
    assert register(app, user, answer["register"]["data"]).status_code == 200
    return answer


def register(app, user, data: dict):
    return api(app, "resource_create", data, user)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_only_who_may_add_resources_gets_upload_urls(circle, app):
    users, org, dataset = circle
    data = {"package_id": dataset["id"], "name": "cells.rtdc", "size": 1000}
    for user in (None, users["bob"], users["carol"]):
        answer = api(app, "dcor_depot_upload_urls", data, user)
        assert answer.status_code == 403, (user, answer.body)
        # a dataset that does not exist gets the very same answer: names cannot be probed
        missing = api(app, "dcor_depot_upload_urls", {**data, "package_id": "no-such"}, user)
        assert (missing.status_code, missing.json["error"]) == (403, answer.json["error"])
        resume = {"package_id": dataset["id"], "resource_id": "0" * 32}
        assert (
            api(app, "dcor_depot_upload_urls", resume, user).json["error"] == (answer.json["error"])
        )
    answer = api(app, "dcor_depot_upload_urls", data, users["alice"])
    assert answer.status_code == 200, answer.body
    assert answer.json["result"]["upload"]["method"] == "PUT"


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"size": 0}, "size", "expected the file's size in bytes"),
        ({"size": "many"}, "size", "Invalid integer"),
        ({"name": "../../etc/passwd"}, "name", "without folders"),
        ({"name": ""}, "name", "Missing value"),
        ({"md5": "not-an-md5"}, "md5", "32 hexadecimal digits"),
        ({"package_id": ""}, "package_id", "Missing value"),
    ],
)
def test_bad_input_is_refused_saying_what_is_wrong(circle, app, change, field, says):
    users, org, dataset = circle
    data = {"package_id": dataset["id"], "name": "cells.rtdc", "size": 1000, **change}
    answer = api(app, "dcor_depot_upload_urls", data, users["alice"])
    assert answer.status_code == 409, answer.body
    assert says.lower() in " ".join(answer.json["error"][field]).lower()


def test_single_put_url_writes_only_its_staged_key_only_once(circle, app, store, random_file):
    users, org, dataset = circle
    path = random_file(3000, "small.bin")
    answer = grant(app, users["alice"], dataset, path, md5=md5_of(path))
    upload = answer["upload"]
    staging = store.settings.staging_bucket
    key = object_key("resource", answer["resource_id"])
    bucket = store.circle_bucket(org["id"])
    assert upload["method"] == "PUT"
    assert f"/{staging}/{key}?" in upload["url"]  # the staging area, not the circle's bucket
    # no multipart upload was created for it
    assert store.client.list_multipart_uploads(Bucket=staging).get("Uploads", []) == [] or all(
        u["Key"] != key for u in store.client.list_multipart_uploads(Bucket=staging)["Uploads"]
    )
    url, headers, data = upload["url"], upload["headers"], path.read_bytes()
    other_key = url.replace(key, object_key("resource", "0" * 36))
    assert http.put(other_key, data=data, headers=headers).status_code == 403
    assert http.put(url, data=data + b"x", headers=headers).status_code == 403
    other_bytes = bytes(255 - b for b in data)
    assert http.put(url, data=other_bytes, headers=headers).status_code == 400  # BadDigest
    assert not store.object_exists(staging, key)
    assert http.put(url, data=data, headers=headers).status_code == 200
    assert http.put(url, data=data, headers=headers).status_code == 412  # written once
    assert store.client.get_object(Bucket=staging, Key=key)["Body"].read() == data
    assert anonymous_status(store.object_url(staging, key)) == 403
    assert not store.object_exists(bucket, key)  # nothing in the circle's bucket yet

    # registered: copied into the circle's bucket, private until verified; the staged
    # object stays until the registration's job ran (a registration that rolls back can
    # be made again), so its URL cannot stage other bytes meanwhile
    assert register(app, users["alice"], answer["register"]["data"]).status_code == 200
    assert store.client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert anonymous_status(store.object_url(bucket, key)) == 403
    assert store.client.get_object(Bucket=staging, Key=key)["Body"].read() == data
    assert http.put(url, data=other_bytes, headers=headers).status_code in (400, 412)
    assert http.put(url, data=data, headers=headers).status_code == 412
    again = register(app, users["alice"], answer["register"]["data"])
    assert again.status_code == 409, again.body

    # the job deletes the staged object; what the URL stages afterwards is never
    # registered or served, and the registered file keeps its bytes
    record_object_sha256(answer["resource_id"])
    assert not store.object_exists(staging, key)
    assert http.put(url, data=data, headers=headers).status_code == 200
    again = register(app, users["alice"], answer["register"]["data"])
    assert again.status_code == 409, again.body
    assert store.client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert helpers.call_action("resource_show", id=answer["resource_id"])["sha256"] == (
        sha256_path(path)
    )


def test_a_file_sent_with_an_encryption_key_of_its_own_is_refused_and_sent_again(
    circle, app, store, random_file
):
    """Ceph RGW carries out a PUT URL with SSE-C headers it was not signed with; the site
    could not read the object. Registration says why (not "cannot be used right now"),
    removes it, and the upload can be sent again with a fresh URL."""
    users, org, dataset = circle
    alice = users["alice"]
    path = random_file(3000, "small.bin")
    answer = grant(app, alice, dataset, path, md5=md5_of(path))
    key = object_key("resource", answer["resource_id"])
    staging, bucket = store.settings.staging_bucket, store.circle_bucket(org["id"])
    customer_key = os.urandom(32)
    ssec = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(customer_key).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(
            hashlib.md5(customer_key).digest()
        ).decode(),
    }

    def send_encrypted(upload) -> None:
        sent = http.put(
            upload["url"], data=path.read_bytes(), headers={**upload["headers"], **ssec}
        )
        assert sent.status_code == 200, sent.text  # the store takes it

    def resume():
        resumed = api(
            app,
            "dcor_depot_upload_urls",
            {"package_id": dataset["id"], "resource_id": answer["resource_id"]},
            alice,
        )
        assert resumed.status_code == 200, resumed.body
        assert resumed.json["result"]["upload"]["method"] == "PUT"  # not "done"
        return resumed.json["result"]["upload"]

    send_encrypted(answer["upload"])
    refused = register(app, alice, answer["register"]["data"])
    assert refused.status_code == 409, refused.body
    assert "sent with an encryption key of the client's" in refused.body
    assert f"dcor_depot_upload_urls with resource_id {answer['resource_id']}" in refused.body
    assert store.object_info(staging, key) is None  # removed
    assert store.object_info(bucket, key) is None

    # resumed after another such PUT: a fresh URL, the unreadable object removed
    send_encrypted(resume())
    upload = resume()
    sent = http.put(upload["url"], data=path.read_bytes(), headers=upload["headers"])
    assert sent.status_code == 200, sent.text
    assert register(app, alice, answer["register"]["data"]).status_code == 200
    assert store.client.get_object(Bucket=bucket, Key=key)["Body"].read() == path.read_bytes()


def test_upload_urls_are_refused_after_expiry(circle, app, random_file, ckan_config, monkeypatch):
    users, org, dataset = circle
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.upload_url_expiry", "60")
    small, big = random_file(3000, "small.bin"), random_file(6 * MiB, "big.bin")
    # URLs signed ten minutes ago with a one-minute expiry (a clock set back, not a wait)
    signed_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    with monkeypatch.context() as patched:
        patched.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: signed_at)
        expired = [grant(app, users["alice"], dataset, path)["upload"] for path in (small, big)]
    fresh = [grant(app, users["alice"], dataset, path)["upload"] for path in (small, big)]
    assert "X-Amz-Expires=60&" in expired[0]["url"]

    def put(upload, path):
        if upload["method"] == "PUT":
            return http.put(upload["url"], data=path.read_bytes(), headers=upload["headers"])
        first = upload["parts"][0]["url"]
        return http.put(first, data=path.read_bytes()[: upload["part_size"]])

    for old, new, path in zip(expired, fresh, (small, big), strict=True):
        refused = put(old, path)
        assert refused.status_code == 403 and b"AccessDenied" in refused.content
        # the very same request with a URL signed now: only the time refused the other
        assert put(new, path).status_code == 200


def test_urls_expire_as_configured_by_default(circle, app, random_file):
    users, org, dataset = circle
    answer = grant(app, users["alice"], dataset, random_file(6 * MiB, "big.bin"))
    upload = answer["upload"]
    assert upload["method"] == "multipart" and upload["part_size"] == 5 * MiB
    assert len(upload["parts"]) == 2
    for url in [p["url"] for p in upload["parts"]] + [upload["complete"]["url"]]:
        assert "X-Amz-Expires=86400&" in url


def test_registration_is_refused_when_the_object_is_missing_or_not_the_one_issued(
    circle, app, store, random_file
):
    users, org, dataset = circle
    alice = users["alice"]
    other = factories.Dataset(name="other", owner_org=org["id"], private=True, user=alice)
    send_to_s3 = readme_client()["send_to_s3"]

    # nothing uploaded
    path = random_file(3000, "small.bin")
    answer = grant(app, alice, dataset, path)
    refused = register(app, alice, answer["register"]["data"])
    assert refused.status_code == 409
    assert "No file was uploaded for resource" in refused.json["error"]["id"][0]

    # uploaded, but registered with another size or in another dataset
    send_to_s3(answer["upload"], path)
    data = answer["register"]["data"]
    refused = register(app, alice, {**data, "size": 3001})
    assert refused.status_code == 409
    assert "has 3000 bytes" in refused.json["error"]["size"][0]
    refused = register(app, alice, {**data, "package_id": other["id"]})
    assert refused.status_code == 409
    assert "issued for another dataset" in refused.json["error"]["id"][0]
    refused = register(app, alice, {k: v for k, v in data.items() if k != "id"})
    assert "dcor_depot_upload_urls returned" in refused.json["error"]["id"][0]

    # a multipart upload completed without its last part
    big = random_file(12 * MiB, "big.bin")
    incomplete = grant(app, alice, dataset, big)
    upload = incomplete["upload"]
    upload["parts"] = upload["parts"][:2]
    send_to_s3(upload, big)
    refused = register(app, alice, incomplete["register"]["data"])
    assert refused.status_code == 409
    assert "parts are missing" in refused.json["error"]["size"][0]

    assert helpers.call_action("package_show", id=dataset["id"])["resources"] == []
    assert helpers.call_action("package_show", id=other["id"])["resources"] == []
    # the right registration still works
    created = register(app, alice, data)
    assert created.status_code == 200, created.body
    assert created.json["result"]["size"] == 3000


def test_multipart_upload_end_to_end(circle, ckan_server, run_worker, random_file, store, tmp_path):
    users, org, dataset = circle
    backup_root = tmp_path / "backup"
    ini = str(derived_ini(tmp_path, **{"dcor_object_store.local_backup_location": backup_root}))
    server = ckan_server(ini)
    site_url, ini = server.url, server.ini
    alice = token(users["alice"])
    path = random_file(48 * MiB, "cells-48MiB.bin")  # 10 parts of 5 MiB
    expected = sha256_path(path)

    resource = readme_client()["upload_to_dcor"](site_url, alice, dataset["id"], str(path))
    rid = resource["id"]
    assert resource["url_type"] == "s3_upload" and resource["size"] == 48 * MiB
    # the resource's URL is CKAN's download URL (permission check, then S3)
    assert resource["url"] == (
        f"{site_url}/dataset/{dataset['id']}/resource/{rid}/download/cells-48MiB.bin"
    )
    bucket, key = store.circle_bucket(org["id"]), object_key("resource", rid)
    assert anonymous_status(store.object_url(bucket, key)) == 403

    run_worker(ini)

    shown = helpers.call_action("resource_show", id=rid)
    assert shown["sha256"] == expected and shown["s3_available"]
    assert store.object_info(bucket, key).sha256 == expected
    assert sha256_path(backup_root / rid[:3] / rid[3:6] / rid[6:]) == expected
    assert [p.name for p in backup_root.rglob("*") if p.is_file()] == [rid[6:]]

    # private: anonymous users are refused by CKAN and by S3
    download = f"{site_url}/dataset/{dataset['id']}/resource/{rid}/download"
    assert http.get(download, allow_redirects=False).status_code == 403
    assert anonymous_status(store.object_url(bucket, key)) == 403
    # the owner is sent to a short-lived URL that names the file
    answer = http.get(download, headers={"Authorization": alice}, allow_redirects=False)
    assert answer.status_code == 302
    assert "X-Amz-Expires=600&" in answer.headers["Location"]
    assert downloaded_sha256(answer.headers["Location"], "cells-48MiB.bin") == expected

    patched = http.post(
        f"{site_url}/api/action/package_patch",
        json={"id": dataset["id"], "private": False},
        headers={"Authorization": alice},
    )
    assert patched.ok, patched.text
    run_worker(ini)

    # public: the object's own URL (no presigned URL to outlive a switch to private),
    # which names the file too
    answer = http.get(download, allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["Location"] == store.object_url(bucket, key)
    assert downloaded_sha256(answer.headers["Location"], "cells-48MiB.bin") == expected


def downloaded_sha256(url: str, filename: str) -> str:
    """GET a URL without credentials; check the file name it gives; SHA-256 of the bytes."""
    digest = hashlib.sha256()
    with http.get(url, stream=True, timeout=60) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
        for chunk in answer.iter_content(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_uploads_whose_bytes_contradict_the_declared_md5_or_sha256_are_refused_for_good(
    circle, app, store, random_file, run_worker, cli
):
    users, org, dataset = circle
    alice = users["alice"]
    # a multipart upload declaring another MD5; a single PUT registered with another SHA-256
    path = random_file(12 * MiB, "big.bin")
    by_md5 = uploaded(app, alice, dataset, path, md5=hashlib.md5(b"other").hexdigest())
    small = random_file(3000, "small.bin")
    by_sha256 = grant(app, alice, dataset, small)
    readme_client()["send_to_s3"](by_sha256["upload"], small)
    claim = hashlib.sha256(b"other").hexdigest()
    registered = register(app, alice, {**by_sha256["register"]["data"], "sha256": claim})
    assert registered.status_code == 200, registered.body
    refused_files = {
        by_md5["resource_id"]: ("MD5", hashlib.md5(path.read_bytes()).hexdigest()),
        by_sha256["resource_id"]: ("SHA-256", sha256_path(small)),
    }
    owner = {"Authorization": token(alice)}
    download = f"/dataset/{dataset['id']}/resource/%s/download"
    for rid in refused_files:
        # not yet verified: nobody gets it
        assert app.get(download % rid, headers=owner, follow_redirects=False).status_code == 409

    failed = run_worker(failures_allowed=True)  # the s3-sha256 job of each fails
    assert sorted(line.split(":")[0] for line in failed) == sorted(
        job_id("s3-sha256", rid) for rid in refused_files
    )
    # made public afterwards: the refused files stay private, their downloads refused with the
    # reason
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    run_worker()

    bucket = store.circle_bucket(org["id"])
    for rid, (name, actual) in refused_files.items():
        shown = helpers.call_action("resource_show", id=rid)
        assert not shown.get("sha256") and not shown.get("s3_available")
        assert f"has {name} {actual}, but the client declared" in shown["s3_upload_error"]
        assert "the upload is corrupt" in shown["s3_upload_error"]
        assert anonymous_status(store.object_url(bucket, object_key("resource", rid))) == 403
        refused = app.get(download % rid, follow_redirects=False)
        assert refused.status_code == 409
        assert "the upload is corrupt" in refused.get_data(as_text=True)
    caught_up = cli.invoke(run_jobs_dcor_depot, [])
    assert caught_up.exit_code == 1 and "2 failed" in caught_up.output
    assert caught_up.output.count("the upload is corrupt") >= 2
    for rid in refused_files:
        assert anonymous_status(store.object_url(bucket, object_key("resource", rid))) == 403


def test_a_registered_file_is_not_replaced_nor_its_record_changed_by_users(
    circle, app, random_file, run_worker
):
    users, org, dataset = circle
    alice = users["alice"]
    path = random_file(3000, "small.bin")
    answer = uploaded(app, alice, dataset, path)
    run_worker()
    rid = answer["resource_id"]
    before = helpers.call_action("resource_show", id=rid)

    patched = api(
        app, "resource_patch", {"id": rid, "sha256": "0" * 64, "s3_available": False}, alice
    )
    assert patched.status_code == 200
    after = helpers.call_action("resource_show", id=rid)
    assert (after["sha256"], after["s3_available"]) == (before["sha256"], True)
    turned = api(app, "resource_patch", {"id": rid, "url_type": "", "url": "x"}, alice)
    assert turned.status_code == 409 and "add a new resource" in turned.json["error"]["url"][0]
    replaced = app.post(
        "/api/action/resource_patch",
        data={"id": rid, "upload": (path.open("rb"), "small.bin")},
        headers={"Authorization": token(alice)},
        content_type="multipart/form-data",
    )
    assert replaced.status_code == 409 and "add a new resource" in replaced.body


def test_the_id_of_a_deleted_or_purged_resource_cannot_be_taken_by_another_dataset(
    circle, app, random_file, run_worker
):
    users, org, dataset = circle
    alice = users["alice"]
    path = random_file(3000, "secret.bin")
    answer = uploaded(app, alice, dataset, path)
    run_worker()
    rid = answer["resource_id"]
    helpers.call_action("resource_delete", id=rid)
    other = factories.Dataset(owner_org=org["id"], private=False, user=alice)

    moved = api(
        app,
        "package_patch",
        {"id": other["id"], "resources": [{"id": rid, "url": "x", "url_type": "upload"}]},
        alice,
    )
    assert moved.status_code == 409, moved.body
    assert "belongs to another dataset" in moved.body
    assert helpers.call_action("package_show", id=other["id"])["resources"] == []

    # nor the id of a purged dataset's file, on either path that takes a chosen id
    doomed = factories.Dataset(owner_org=org["id"], private=True, user=alice)
    purged = uploaded(app, alice, doomed, random_file(2000, "purged.bin"))["resource_id"]
    run_worker()
    sysadmin = factories.Sysadmin()
    helpers.call_action("dataset_purge", context={"user": sysadmin["name"]}, id=doomed["id"])
    for action, data in (
        ("resource_create", {"package_id": other["id"], "id": purged, "url": "x"}),
        ("package_patch", {"id": other["id"], "resources": [{"id": purged, "url": "x"}]}),
    ):
        taken = api(app, action, data, alice)
        assert taken.status_code == 409, (action, taken.body)
        assert "belongs to another dataset" in taken.body
    assert helpers.call_action("package_show", id=other["id"])["resources"] == []


def test_dc_file_gets_metadata_from_s3_and_a_verified_backup(
    circle, app, store, rtdc_file, run_worker, tmp_path, ckan_config, monkeypatch
):
    users, org, dataset = circle
    backup_root = tmp_path / "backup"
    ini = str(derived_ini(tmp_path, **{"dcor_object_store.local_backup_location": backup_root}))
    monkeypatch.setitem(ckan_config, "dcor_object_store.local_backup_location", str(backup_root))
    path = rtdc_file(events=300, name="cells.rtdc")
    expected = sha256_path(path)
    answer = uploaded(app, users["alice"], dataset, path, md5=md5_of(path))
    rid = answer["resource_id"]

    run_worker(ini)

    shown = helpers.call_action("resource_show", id=rid)
    assert shown["sha256"] == expected
    assert shown["dc:experiment:sample"] == "test sample" and shown["format"] == "RT-DC"
    copy = backup_root / rid[:3] / rid[3:6] / rid[6:]
    assert sha256_path(copy) == expected
    # a verified copy is kept; a damaged one replaced
    assert "already" in backup_resource(rid)
    copy.write_bytes(b"damaged")
    assert "replaced a copy with other bytes" in backup_resource(rid)
    assert sha256_path(copy) == expected
    # an object whose bytes are not the recorded ones is never copied
    copy.unlink()
    bucket, key = store.circle_bucket(org["id"]), object_key("resource", rid)
    store.client.put_object(Bucket=bucket, Key=key, Body=b"not the measurement")
    with pytest.raises(DepotError, match="it was not kept"):
        backup_resource(rid)
    assert list(copy.parent.iterdir()) == []


def test_what_a_put_may_add_unsigned_never_reaches_the_registered_object(
    circle, app, store, random_file
):
    users, org, dataset = circle
    path = random_file(3000, "page.html")
    answer = grant(app, users["alice"], dataset, path)
    upload = answer["upload"]
    extra = {
        "x-amz-meta-evil": "1",
        "x-amz-website-redirect-location": "/evil",
        "x-amz-tagging": "public=true",
        "x-amz-acl": "public-read",
        "Content-Disposition": "inline",
    }
    put = http.put(upload["url"], data=path.read_bytes(), headers={**upload["headers"], **extra})
    assert put.status_code == 200
    staging, key = store.settings.staging_bucket, object_key("resource", answer["resource_id"])
    head = store.client.head_object(Bucket=staging, Key=key)
    assert head["Metadata"]["evil"] == "1" and head["WebsiteRedirectLocation"] == "/evil"
    assert anonymous_status(store.object_url(staging, key)) == 403  # the ACL is ignored
    assert register(app, users["alice"], answer["register"]["data"]).status_code == 200
    bucket = store.circle_bucket(org["id"])
    head = store.client.head_object(Bucket=bucket, Key=key)
    assert "evil" not in head["Metadata"] and "WebsiteRedirectLocation" not in head
    assert head["ContentDisposition"] == 'attachment; filename="page.html"'
    assert store.client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", []) == []
    assert anonymous_status(store.object_url(bucket, key)) == 403
    record_object_sha256(answer["resource_id"])  # the s3-sha256 job
    head = store.client.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha256_path(path)
    assert anonymous_status(store.object_url(bucket, key)) == 403  # a private dataset


def expire(resource_id: str) -> None:
    """Set a grant's expiry in the past (instead of waiting a day)."""
    past = grants.utcnow() - datetime.timedelta(seconds=1)
    grants.update(resource_id, expires=past)
    model.Session.commit()


def test_expired_and_aborted_uploads_are_refused_and_pruned(circle, app, store, random_file, cli):
    users, org, dataset = circle
    alice = users["alice"]
    bucket = store.settings.staging_bucket
    big = random_file(6 * MiB, "big.bin")
    partial = grant(app, alice, dataset, big)
    first = partial["upload"]["parts"][0]
    assert http.put(first["url"], data=big.read_bytes()[: 5 * MiB]).status_code == 200
    small = random_file(3000, "small.bin")
    whole = uploaded_only(app, alice, dataset, small)
    aborted = grant(app, alice, dataset, random_file(6 * MiB, "gone.bin"))
    assert http.delete(aborted["upload"]["abort"]["url"]).status_code == 204
    pending = grant(app, alice, dataset, random_file(6 * MiB, "pending.bin"))

    # resumed while the store holds the whole file: nothing to send, register it
    resume = {"package_id": dataset["id"], "resource_id": whole["resource_id"]}
    done = api(app, "dcor_depot_upload_urls", resume, alice)
    assert done.status_code == 200, done.body
    assert done.json["result"]["upload"]["method"] == "done"
    assert done.json["result"]["register"]["data"] == whole["register"]["data"]

    resume = {"package_id": dataset["id"], "resource_id": aborted["resource_id"]}
    refused = api(app, "dcor_depot_upload_urls", resume, alice)
    assert refused.status_code == 409 and "was aborted" in refused.body
    refused = register(app, alice, aborted["register"]["data"])
    assert refused.status_code == 409 and "was aborted" in refused.body

    for answer in (partial, whole):
        expire(answer["resource_id"])
        resume = {"package_id": dataset["id"], "resource_id": answer["resource_id"]}
        refused = api(app, "dcor_depot_upload_urls", resume, alice)
        assert refused.status_code == 409 and "expired at" in refused.body, refused.body
        refused = register(app, alice, answer["register"]["data"])
        assert refused.status_code == 409 and "expired at" in refused.body
        assert "ask dcor_depot_upload_urls for a new upload" in refused.body

    dry = cli.invoke(dcor_prune_orphaned_objects, ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "3 expired uploads would be removed" in dry.output
    assert store.object_exists(bucket, object_key("resource", whole["resource_id"]))
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    assert "3 expired uploads removed" in pruned.output
    for answer in (partial, whole, aborted):
        key = object_key("resource", answer["resource_id"])
        assert f"removed upload s3://{bucket}/{key} of resource {answer['resource_id']}" in (
            pruned.output
        )
        assert not store.object_exists(bucket, key)
        assert grants.get(answer["resource_id"]) is None
    ours = {object_key("resource", a["resource_id"]) for a in (partial, aborted, pending)}
    uploads = store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads if u["Key"] in ours] == [pending["upload"]["upload_id"]]
    assert grants.get(pending["resource_id"]) is not None
    model.Session.rollback()


def test_a_registration_that_rolls_back_can_be_made_again(
    circle, app, store, random_file, cli, monkeypatch
):
    """A registration copies the upload into place before CKAN commits the resource:
    when its transaction rolls back, the upload can be registered again (its staged
    object is kept), and the copy of one that nobody registers goes when it expires."""
    users, org, dataset = circle
    alice = users["alice"]
    paths = [random_file(3000 + i, f"file{i}.bin") for i in range(2)]
    again, abandoned = (uploaded_only(app, alice, dataset, path) for path in paths)
    circle_bucket, staging = store.circle_bucket(org["id"]), store.settings.staging_bucket

    def fails(*args, **kwargs):
        raise tk.ValidationError({"id": ["the database went away"]})

    with monkeypatch.context() as patched:
        patched.setattr(depot_files, "record_file", fails)
        for answer in (again, abandoned):
            refused = register(app, alice, answer["register"]["data"])
            assert refused.status_code == 409 and "went away" in refused.body
            key = object_key("resource", answer["resource_id"])
            assert store.object_exists(circle_bucket, key)  # copied before the rollback
            assert grants.get(answer["resource_id"]).state == grants.PENDING
            model.Session.rollback()

    created = register(app, alice, again["register"]["data"])
    assert created.status_code == 200, created.body
    key = object_key("resource", again["resource_id"])
    body = store.client.get_object(Bucket=circle_bucket, Key=key)["Body"].read()
    assert body == paths[0].read_bytes()

    for answer in (again, abandoned):
        expire(answer["resource_id"])
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    assert "2 expired uploads removed" in pruned.output
    assert store.object_exists(circle_bucket, key)  # registered: kept
    gone = object_key("resource", abandoned["resource_id"])
    assert not store.object_exists(circle_bucket, gone)
    assert not store.object_exists(staging, gone) and not store.object_exists(staging, key)
    with pytest.raises(tk.ObjectNotFound):
        helpers.call_action("resource_show", id=abandoned["resource_id"])


def uploaded_only(app, user, dataset, path: Path) -> dict:
    """A grant whose file was sent and never registered."""
    answer = grant(app, user, dataset, path)
    readme_client()["send_to_s3"](answer["upload"], path)
    return answer


def test_the_readme_client_resumes_a_killed_upload_sending_only_missing_parts(
    circle, ckan_server, store, random_file
):
    users, org, dataset = circle
    server = ckan_server()
    alice = token(users["alice"])
    path = random_file(300 * MiB, "cells-300MiB.bin")
    state = Path(f"{path}.dcor-upload.json")
    code = (
        f"exec(compile(open({str(README)!r}).read().split('```python')[1].split('```')[0], "
        "'README', 'exec'))\n"
        f"upload_to_dcor({server.url!r}, {alice!r}, {dataset['id']!r}, {str(path)!r}, "
        "parallel=2)"
    )
    # as the README says for a store whose certificate comes from a private CA
    env = {**os.environ, "REQUESTS_CA_BUNDLE": demo.store_ca_bundle() or ""}
    client = subprocess.Popen([sys.executable, "-c", code], env=env)
    bucket = store.settings.staging_bucket  # where the upload goes until it is registered
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and client.poll() is None:
        time.sleep(0.05)  # polling for the grant
    rid = json.loads(state.read_text())["request"]["resource_id"]
    key = object_key("resource", rid)
    upload_id = grants.get(rid).upload_id
    model.Session.rollback()
    while time.monotonic() < deadline and client.poll() is None:
        if len(store.uploaded_parts(bucket, key, upload_id)) >= 10:
            break
        time.sleep(0.05)  # polling for the parts
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    held = store.uploaded_parts(bucket, key, upload_id)
    while True:  # a part whose bytes had all arrived may still be stored: until no change
        time.sleep(0.3)
        again = store.uploaded_parts(bucket, key, upload_id)
        if again == held:
            break
        held = again
    assert 10 <= len(held) < 60

    namespace = readme_client()
    sent = []
    send_to_s3 = namespace["send_to_s3"]

    def counting(upload, *args):
        sent.append((upload, send_to_s3(upload, *args)))
        return sent[-1][1]

    namespace["send_to_s3"] = counting
    resource = namespace["upload_to_dcor"](server.url, alice, dataset["id"], str(path))
    assert resource["id"] == rid
    ((upload, count),) = sent
    assert sorted(p["part_number"] for p in upload["parts_done"]) == sorted(held)
    assert {p["part_number"]: p["etag"] for p in upload["parts_done"]} == {
        number: etag for number, (etag, size) in held.items()
    }
    assert count == 60 - len(held) == len(upload["parts"])
    assert not state.exists()
    bucket = store.circle_bucket(org["id"])  # registered: copied into place
    assert store.hash_object(bucket, key).sha256 == sha256_path(path)


def test_no_url_of_a_grant_changes_a_registered_file(
    circle, app, store, random_file, run_worker, tmp_path, ckan_config, monkeypatch, cli
):
    """Every URL the grants handed out, sent again after the files were registered,
    verified and backed up: what CKAN serves, the recorded SHA-256 and the backup stay."""
    users, org, dataset = circle
    alice = users["alice"]
    backups = tmp_path / "backup"
    monkeypatch.setitem(ckan_config, "dcor_object_store.local_backup_location", str(backups))
    ini = str(derived_ini(tmp_path, **{"dcor_object_store.local_backup_location": backups}))
    small, big = random_file(3000, "small.bin"), random_file(6 * MiB, "big.bin")
    answers = [uploaded(app, alice, dataset, path) for path in (small, big)]
    run_worker(ini)
    recorded = {
        a["resource_id"]: helpers.call_action("resource_show", id=a["resource_id"]) for a in answers
    }
    assert {r["sha256"] for r in recorded.values()} == {sha256_path(small), sha256_path(big)}
    owner = {"Authorization": token(alice)}

    # every URL again, with other bytes of the same size
    single, multipart = (a["upload"] for a in answers)
    replayed = [http.put(single["url"], data=os.urandom(3000), headers=single["headers"])]
    for part in multipart["parts"]:
        size = multipart["part_size"] if part["part_number"] == 1 else 1 * MiB
        replayed.append(http.put(part["url"], data=os.urandom(size)))
    replayed.append(http.post(multipart["complete"]["url"], data="<CompleteMultipartUpload/>"))
    replayed.append(http.delete(multipart["abort"]["url"]))
    # the jobs deleted the staged objects: the single PUT stages its key again (never
    # registered or served); the multipart upload is gone (completed): its URLs are refused
    assert replayed[0].status_code == 200
    assert all(r.status_code in (400, 404) for r in replayed[1:]), replayed
    run_worker(ini)
    for answer, path in zip(answers, (small, big), strict=True):
        rid = answer["resource_id"]
        shown = helpers.call_action("resource_show", id=rid)
        assert shown["sha256"] == recorded[rid]["sha256"] == sha256_path(path)
        url = f"/dataset/{dataset['id']}/resource/{rid}/download"
        location = app.get(url, headers=owner, follow_redirects=False).headers["Location"]
        assert downloaded_sha256(location, path.name) == sha256_path(path)
        assert sha256_path(backups / rid[:3] / rid[3:6] / rid[6:]) == sha256_path(path)
        # the upload cannot be registered again
        again = register(app, alice, answer["register"]["data"])
        assert again.status_code == 409
    # once the grants expired, the prune removes the staged objects and keeps the files
    monkeypatch.setattr(prune_operations, "STAGED_GRACE", datetime.timedelta(0))
    staging = store.settings.staging_bucket
    for answer in answers:
        expire(answer["resource_id"])
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    assert "2 expired uploads removed" in pruned.output
    for answer, path in zip(answers, (small, big), strict=True):
        rid = answer["resource_id"]
        key = object_key("resource", rid)
        assert f"removed upload s3://{staging}/{key} of resource {rid} (registered" in (
            pruned.output
        )
        assert not store.object_exists(staging, key)
        url = f"/dataset/{dataset['id']}/resource/{rid}/download"
        location = app.get(url, headers=owner, follow_redirects=False).headers["Location"]
        assert downloaded_sha256(location, path.name) == sha256_path(path)


def test_an_upload_granted_before_the_staging_area_is_refused(
    circle, app, store, random_file, run_worker, cli
):
    """A site that upgrades keeps its pending grants, whose URLs wrote the circle's bucket
    with the extension's own identity: what they wrote may be a copy of any object it
    can read, with any metadata. They are neither resumed nor registered (the answer says
    to send the file again); once expired, the prune removes what they wrote."""
    users, org, dataset = circle
    alice = users["alice"]
    bucket = store.circle_bucket(org["id"])
    store.ensure_bucket(bucket)

    def old_grant(path: Path, complete: bool) -> str:
        rid = str(uuid.uuid4())
        key = object_key("resource", rid)
        now = grants.utcnow()
        upload_id = None
        metadata = {"dcor-dataset-id": dataset["id"], "dcor-size": str(path.stat().st_size)}
        if complete:
            store.client.put_object(
                Bucket=bucket, Key=key, Body=path.read_bytes(), Metadata=metadata
            )
        else:
            upload_id = store.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        grants.add(
            grants.Grant(
                rid,
                dataset["id"],
                org["id"],
                None,
                bucket,
                key,
                path.name,
                path.stat().st_size,
                5 * MiB,
                None,
                upload_id,
                now,
                now + datetime.timedelta(days=1),
                grants.PENDING,
            )
        )
        model.Session.commit()
        return rid

    done_path, open_path = random_file(3000, "done.bin"), random_file(6 * MiB, "open.bin")
    done, unfinished = old_grant(done_path, True), old_grant(open_path, False)
    for rid in (done, unfinished):
        resume = {"package_id": dataset["id"], "resource_id": rid}
        refused = api(app, "dcor_depot_upload_urls", resume, alice)
        assert refused.status_code == 409, refused.body
        assert "can be neither resumed nor registered" in refused.body
        assert "send the file again" in refused.body
        data = {"package_id": dataset["id"], "id": rid, "name": "x.bin", "url_type": "s3_upload"}
        refused = register(app, alice, data)
        assert refused.status_code == 409 and "neither resumed nor registered" in refused.body
        with pytest.raises(tk.ObjectNotFound):
            helpers.call_action("resource_show", id=rid)

    for rid in (done, unfinished):
        expire(rid)
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    assert "2 expired uploads removed" in pruned.output
    for rid in (done, unfinished):
        key = object_key("resource", rid)
        assert f"removed upload s3://{bucket}/{key} of resource {rid}" in pruned.output
        assert not store.object_exists(bucket, key)
        assert store.stale_multipart_uploads(bucket, datetime.datetime.now(datetime.UTC), key) == []


def test_circle_quota_and_largest_upload(circle, app, random_file, ckan_config, monkeypatch):
    users, org, dataset = circle
    alice = users["alice"]
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "1")
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.upload_max_gib", "1")
    uploaded(app, alice, dataset, random_file(3000, "small.bin"))

    def ask(size):
        data = {"package_id": dataset["id"], "name": "big.rtdc", "size": size}
        return api(app, "dcor_depot_upload_urls", data, alice)

    too_big = ask(GiB + 1)
    assert too_big.status_code == 409
    assert f"at most {GiB} bytes (1 GiB, ckanext.dcor_depot.upload_max_gib)" in too_big.body
    exactly = ask(GiB - 3000)  # recorded files and this grant: exactly the limit
    assert exactly.status_code == 200, exactly.body
    over = ask(1)
    assert over.status_code == 409
    assert (
        f"Circle hl60-lab uses {GiB} bytes (3000 in files, {GiB - 3000} in pending uploads) "
        f"of its limit of {GiB} bytes (1 GiB, ckanext.dcor_depot.circle_quota_gib)"
    ) in over.json["error"]["size"][0]


def test_a_dataset_moves_only_into_a_circle_it_fits(
    circle, app, random_file, ckan_config, monkeypatch
):
    """Moving a dataset to another circle moves its files and pending uploads into that
    circle's quota: every action that moves it (package_owner_org_update, package_patch
    and package_update) refuses a move that does not fit, as an editor of both circles;
    an upload granted before the move must fit the new circle when it is registered."""
    users, org, dataset = circle
    alice = users["alice"]
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "1")
    other = factories.Organization(
        name="other-lab", users=[{"name": "alice", "capacity": "editor"}]
    )
    theirs = factories.Dataset(name="theirs", owner_org=other["id"], private=True, user=alice)
    uploaded(app, alice, dataset, random_file(3000, "small.bin"))
    moving = uploaded_only(app, alice, dataset, random_file(1000, "later.bin"))
    data = {"package_id": theirs["id"], "name": "big.rtdc", "size": GiB - 3999}
    assert api(app, "dcor_depot_upload_urls", data, alice).status_code == 200

    says = (
        f"Circle other-lab uses {GiB - 3999} bytes (0 in files, {GiB - 3999} in pending "
        f"uploads) of its limit of {GiB} bytes (1 GiB, ckanext.dcor_depot.circle_quota_gib): "
        "dataset hl60 with 4000 bytes (3000 in files, 1000 pending) does not fit"
    )
    shown = helpers.call_action("package_show", id=dataset["id"])
    moves = [  # package_owner_org_update itself is for sysadmins only
        ("package_owner_org_update", {"id": dataset["id"], "organization_id": other["name"]}),
        ("package_patch", {"id": dataset["id"], "owner_org": other["id"]}),
        ("package_update", {**shown, "owner_org": other["id"]}),
    ]
    sysadmin = factories.Sysadmin()
    for action, move in moves:
        refused = api(app, action, move, sysadmin if action == moves[0][0] else alice)
        assert refused.status_code == 409, (action, refused.body)
        assert says in refused.json["error"]["owner_org"][0], action
        assert helpers.call_action("package_show", id=dataset["id"])["owner_org"] == org["id"]

    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "2")
    moved = api(app, *moves[1], alice)
    assert moved.status_code == 200, moved.body
    assert grants.circle_usage(other["id"]) == (3000, GiB - 3999 + 1000)
    assert grants.circle_usage(org["id"]) == (0, 0)

    # granted while the move ran (the grant still counts against the old circle)
    grants.update(moving["resource_id"], owner_org=org["id"])
    model.Session.commit()
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "1")
    refused = register(app, alice, moving["register"]["data"])
    assert refused.status_code == 409
    assert "Circle other-lab uses" in refused.body and "a file of 1000 bytes does not fit" in (
        refused.body
    )
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "2")
    assert register(app, alice, moving["register"]["data"]).status_code == 200


def test_the_quota_counts_the_bytes_the_store_holds_until_they_are_removed(
    circle, app, store, api_upload, random_file, run_worker, cli, ckan_config, monkeypatch
):
    """Deleting a file, CKAN dropping its row, purging its dataset: its bytes still count
    until they are pruned. Files uploaded through CKAN count and are refused too."""
    users, org, dataset = circle
    alice = users["alice"]
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "1")
    bucket = store.circle_bucket(org["id"])

    def files() -> int:
        recorded, _ = grants.circle_usage(org["id"], bucket)
        model.Session.rollback()
        return recorded

    direct = uploaded(app, alice, dataset, random_file(3000, "direct.bin"))["resource_id"]
    web = api_upload(alice, dataset["id"], random_file(2000, "web.bin"))["id"]  # no job ran
    other = factories.Dataset(owner_org=org["id"], user=alice)
    doomed = api_upload(alice, other["id"], random_file(1000, "doomed.bin"))["id"]
    assert files() == 6000
    for rid in (direct, web):
        helpers.call_action("resource_delete", context={"user": "alice"}, id=rid)
    helpers.call_action(
        "resource_create", context={"user": "alice"}, package_id=dataset["id"], url="x:"
    )
    assert {r.id for r in model.Session.query(model.Resource)} & {direct, web} == set()
    model.Session.rollback()
    sysadmin = factories.Sysadmin()
    helpers.call_action("dataset_purge", context={"user": sysadmin["name"]}, id=other["id"])
    run_worker(failures_allowed=True)  # the web upload's job finds its resource gone
    assert files() == 6000  # CKAN lost every row of them; the store holds their bytes

    # a file through CKAN's own upload that does not fit is refused, and not kept
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "0")
    quota = 6000 + 4000
    monkeypatch.setattr(config, "circle_quota", lambda: quota)
    token = factories.APIToken(user="alice")["token"]
    storage = placement.ckan_path(str(uuid.uuid4())).parents[2]
    stored = {p for p in storage.rglob("*") if p.is_file()}
    with open(random_file(4001, "large.bin"), "rb") as fd:
        refused = app.post(
            "/api/action/resource_create",
            data={"package_id": dataset["id"], "upload": (fd, "large.bin")},
            headers={"Authorization": token},
            content_type="multipart/form-data",
        )
    assert refused.status_code == 409, refused.body
    assert f"uses 6000 bytes (6000 in files, 0 in pending uploads) of its limit of {quota}" in (
        refused.body
    )
    assert {p for p in storage.rglob("*") if p.is_file()} == stored  # nothing of it was kept
    assert api_upload(alice, dataset["id"], random_file(4000, "fits.bin"))["size"] == 4000
    assert files() == 10000

    # pruned: the bytes are gone, and so is their share of the quota
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.purge_retention_days", "0")
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    # the files whose rows CKAN dropped and the purged dataset's are gone
    assert "3 purged files past 0 days" in pruned.output
    assert files() == 4000
    assert store.object_info(bucket, object_key("resource", direct)) is None
    assert not placement.ckan_path(web).exists() and not placement.ckan_path(doomed).exists()


def test_the_quota_counts_stored_files_not_sizes_users_type(
    circle, app, api_upload, random_file, ckan_config, monkeypatch
):
    """A resource of url_type upload without a file (its size is whatever the user typed)
    takes nothing of the quota; a file that arrived before arrivals were recorded counts
    from the upgrade on (migration c5a1e9d3f7b2), by the bytes at CKAN's path."""
    users, org, dataset = circle
    alice = users["alice"]
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "1")
    typed = helpers.call_action(
        "resource_create",
        context={"user": "alice"},
        package_id=dataset["id"],
        url="nothing.rtdc",
        url_type="upload",
        size=2 * GiB,
    )
    early = api_upload(alice, dataset["id"], random_file(3000, "early.bin"))["id"]
    assert grants.circle_usage(org["id"]) == (3000, 0)
    data = {"package_id": dataset["id"], "name": "fits.bin", "size": GiB - 3000}
    assert api(app, "dcor_depot_upload_urls", data, alice).status_code == 200

    # as before this version: neither resource has a row
    model.Session.execute(
        sa.delete(file_table).where(file_table.c.resource_id.in_([early, typed["id"]]))
    )
    model.Session.commit()
    assert grants.circle_usage(org["id"]) == (0, GiB - 3000)
    versions = Path(prune_operations.__file__).parents[1] / "migration/dcor_depot/versions"
    spec = importlib.util.spec_from_file_location(
        "arrivals", versions / "c5a1e9d3f7b2_dcor_depot_file_arrivals.py"
    )
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    with model.meta.engine.begin() as connection:
        with Operations.context(MigrationContext.configure(connection)):
            migration.upgrade()
    assert grants.circle_usage(org["id"]) == (3000, GiB - 3000)
    model.Session.rollback()
    refused = api(app, "dcor_depot_upload_urls", {**data, "size": 1}, alice)
    assert refused.status_code == 409 and f"uses {GiB} bytes" in refused.body


def test_grants_are_bounded_per_user_and_resuming_never_extends_one(
    circle, app, random_file, ckan_config, monkeypatch
):
    users, org, dataset = circle
    alice = users["alice"]
    assert config.upload_max_size() == 1024 * GiB  # bounded without any setting
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.upload_max_gib", "0")
    assert config.upload_max_size() == MAX_OBJECT_SIZE  # 0 (the default before): S3's limit
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.upload_max_gib", "1024")
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.upload_max_pending", "2")
    answers = [grant(app, alice, dataset, random_file(6 * MiB, f"{i}.bin")) for i in range(2)]
    data = {"package_id": dataset["id"], "name": "third.bin", "size": 1000}
    refused = api(app, "dcor_depot_upload_urls", data, alice)
    assert refused.status_code == 409 and "You have 2 uploads granted" in refused.body
    issued = grants.get(answers[0]["resource_id"])
    model.Session.rollback()
    resume = {"package_id": dataset["id"], "resource_id": answers[0]["resource_id"]}
    again = api(app, "dcor_depot_upload_urls", resume, alice).json["result"]
    assert again["expires"] <= answers[0]["expires"]
    assert grants.get(answers[0]["resource_id"]).expires == issued.expires
    model.Session.rollback()
    # another user's grants are theirs
    assert api(app, "dcor_depot_upload_urls", data, users["carol"]).status_code == 403


def test_two_grants_at_once_cannot_overshoot_the_quota(circle, ckan_config, monkeypatch):
    users, org, dataset = circle
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.circle_quota_gib", "1")
    barrier = threading.Barrier(2)
    results = []

    def ask():
        barrier.wait()
        try:
            helpers.call_action(
                "dcor_depot_upload_urls",
                context={"user": "alice", "ignore_auth": False},
                package_id=dataset["id"],
                name="half.rtdc",
                size=GiB // 2 + 1,
            )
            results.append("granted")
        except tk.ValidationError as exc:
            results.append(str(exc.error_dict["size"][0]))
        finally:
            model.Session.remove()

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results)[1] == "granted", results
    assert "of its limit of" in sorted(results)[0], results


def test_without_an_upload_identity_nothing_is_signed_and_the_answer_says_why(
    circle, app, ckan_config, monkeypatch, caplog
):
    users, org, dataset = circle
    monkeypatch.setitem(ckan_config, "dcor_object_store.upload_access_key_id", "")
    monkeypatch.setitem(ckan_config, "dcor_object_store.upload_secret_access_key", "")
    data = {"package_id": dataset["id"], "name": "cells.rtdc", "size": 3000}
    answer = api(app, "dcor_depot_upload_urls", data, users["alice"])
    assert answer.status_code == 409
    body = answer.get_data(as_text=True)
    assert "its operator has to configure an upload identity" in body
    assert "Upload the file with resource_create instead" in body
    assert "X-Amz-" not in body and grants.expired() == []
    assert "No upload identity is configured" in caplog.text
    # everything else works: a file uploaded through CKAN
    assert api(app, "package_show", {"id": dataset["id"]}, users["alice"]).status_code == 200


class DroppingServer:
    """Accepts connections and closes each after the first bytes of the request: a store
    behind a proxy that drops connections."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with client:
                client.settimeout(5)
                try:
                    client.recv(1024)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("failure", ["refused", "dropped-http", "dropped-https"])
def test_a_store_that_cannot_be_used_is_not_described_to_users(
    circle, app, random_file, ckan_config, monkeypatch, caplog, failure
):
    users, org, dataset = circle
    path = random_file(3000)
    data = {"package_id": dataset["id"], "name": path.name, "size": 3000}
    good = api(app, "dcor_depot_upload_urls", data, users["alice"]).json["result"]
    dropping = DroppingServer()
    try:
        endpoint = {
            "refused": "http://127.0.0.1:9",
            "dropped-http": f"http://127.0.0.1:{dropping.port}",
            "dropped-https": f"https://127.0.0.1:{dropping.port}",
        }[failure]
        monkeypatch.setitem(ckan_config, "dcor_object_store.endpoint_url", endpoint)
        answers = [
            api(app, "dcor_depot_upload_urls", data, users["alice"]),
            api(
                app,
                "dcor_depot_upload_urls",
                {**data, "resource_id": good["resource_id"]},
                users["alice"],
            ),
            register(app, users["alice"], good["register"]["data"]),
        ]
    finally:
        dropping.close()
    port = endpoint.rsplit(":", 1)[1]
    for answer in answers:
        assert answer.status_code == 409
        error = json.dumps(answer.json["error"])  # not the API's help link, CKAN's address
        assert "The object store cannot be used right now; try again later" in error, error
        # its address and the options to check are for the operator: in the log
        assert "127.0.0.1" not in error and port not in error
        assert "dcor_object_store" not in error
    assert f"127.0.0.1:{port}" in caplog.text
