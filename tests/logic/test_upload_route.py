"""The direct-to-S3 upload route, used as a client would: the action over CKAN's
API, plain ``requests`` against the presigned URLs (the README's own client
code), ``resource_create``, a real worker, then what the user and the operator
see in S3, on the resource, in the backup folder and at the download URL."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
import requests
from ckan.tests import factories, helpers

from ckanext.dcor_depot.cli import run_jobs_dcor_depot
from ckanext.dcor_depot.jobs.backup import backup_resource
from ckanext.dcor_depot.storage.depot import DepotError
from ckanext.dcor_depot.storage.s3 import MiB, object_key

from ..conftest import anonymous_status, derived_ini, sha256_path

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

README = Path(__file__).parents[2] / "README.md"


def readme_client() -> dict:
    """The functions of the README's client example (``upload_to_dcor``, ``send_to_s3``)."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
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
        ({"package_id": "no-such-dataset"}, "package_id", "not found"),
    ],
)
def test_bad_input_is_refused_saying_what_is_wrong(circle, app, change, field, says):
    users, org, dataset = circle
    data = {"package_id": dataset["id"], "name": "cells.rtdc", "size": 1000, **change}
    answer = api(app, "dcor_depot_upload_urls", data, users["alice"])
    assert answer.status_code == 409, answer.body
    assert says.lower() in " ".join(answer.json["error"][field]).lower()


def test_single_put_url_writes_only_its_key_only_once(circle, app, store, random_file):
    users, org, dataset = circle
    path = random_file(3000, "small.bin")
    answer = grant(app, users["alice"], dataset, path, md5=md5_of(path))
    upload = answer["upload"]
    bucket = f"test-circle-{org['id']}"
    key = object_key("resource", answer["resource_id"])
    assert upload["method"] == "PUT"
    # no multipart upload was created for it
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    url, headers, data = upload["url"], upload["headers"], path.read_bytes()
    other_key = url.replace(key, object_key("resource", "0" * 36))
    assert requests.put(other_key, data=data, headers=headers).status_code == 403
    assert requests.put(url, data=data + b"x", headers=headers).status_code == 403
    other_bytes = bytes(255 - b for b in data)
    assert requests.put(url, data=other_bytes, headers=headers).status_code == 400  # BadDigest
    assert not store.object_exists(bucket, key)
    assert requests.put(url, data=data, headers=headers).status_code == 200
    assert requests.put(url, data=data, headers=headers).status_code == 412  # written once
    assert store.client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert anonymous_status(store.object_url(bucket, key)) == 403


def test_upload_urls_are_refused_after_expiry(circle, app, random_file, ckan_config, monkeypatch):
    users, org, dataset = circle
    # below the configurable minimum (60 s), to keep the test short
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.upload_url_expiry", "1")
    small = grant(app, users["alice"], dataset, random_file(3000, "small.bin"))["upload"]
    big = grant(app, users["alice"], dataset, random_file(6 * MiB, "big.bin"))["upload"]
    assert "X-Amz-Expires=1&" in small["url"]
    time.sleep(2.5)  # past the 1 s expiry of the URLs
    assert requests.put(small["url"], data=b"x" * 3000, headers=small["headers"]).status_code == 403
    part = big["parts"][0]["url"]
    assert requests.put(part, data=b"x" * big["part_size"]).status_code == 403


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


def test_300_mib_multipart_upload_end_to_end(
    circle, ckan_server, run_worker, random_file, store, tmp_path
):
    users, org, dataset = circle
    backup_root = tmp_path / "backup"
    ini = str(derived_ini(tmp_path, **{"dcor_object_store.local_backup_location": backup_root}))
    server = ckan_server(ini)
    site_url, ini = server.url, server.ini
    alice = token(users["alice"])
    path = random_file(300 * MiB, "cells-300MiB.bin")
    expected = sha256_path(path)

    resource = readme_client()["upload_to_dcor"](site_url, alice, dataset["id"], str(path))
    rid = resource["id"]
    assert resource["url_type"] == "s3_upload" and resource["size"] == 300 * MiB
    # the resource's URL is CKAN's download URL (permission check, then S3)
    assert resource["url"] == (
        f"{site_url}/dataset/{dataset['id']}/resource/{rid}/download/cells-300MiB.bin"
    )
    bucket, key = f"test-circle-{org['id']}", object_key("resource", rid)
    assert anonymous_status(store.object_url(bucket, key)) == 403

    run_worker(ini)

    shown = helpers.call_action("resource_show", id=rid)
    assert shown["sha256"] == expected and shown["s3_available"]
    assert store.object_info(bucket, key).sha256 == expected
    assert sha256_path(backup_root / rid[:3] / rid[3:6] / rid[6:]) == expected
    assert [p.name for p in backup_root.rglob("*") if p.is_file()] == [rid[6:]]

    # private: anonymous users are refused by CKAN and by S3
    download = f"{site_url}/dataset/{dataset['id']}/resource/{rid}/download"
    assert requests.get(download, allow_redirects=False).status_code == 403
    assert anonymous_status(store.object_url(bucket, key)) == 403
    # the owner is sent to a short-lived URL that names the file
    answer = requests.get(download, headers={"Authorization": alice}, allow_redirects=False)
    assert answer.status_code == 302
    assert "X-Amz-Expires=600&" in answer.headers["Location"]
    assert downloaded_sha256(answer.headers["Location"], "cells-300MiB.bin") == expected

    patched = requests.post(
        f"{site_url}/api/action/package_patch",
        json={"id": dataset["id"], "private": False},
        headers={"Authorization": alice},
    )
    assert patched.ok, patched.text
    run_worker(ini)

    # public: the object's own URL (no presigned URL to outlive a switch to private),
    # which names the file too
    answer = requests.get(download, allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["Location"] == store.object_url(bucket, key)
    assert downloaded_sha256(answer.headers["Location"], "cells-300MiB.bin") == expected


def downloaded_sha256(url: str, filename: str) -> str:
    """GET a URL without credentials; check the file name it gives; SHA-256 of the bytes."""
    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=60) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
        for chunk in answer.iter_content(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_multipart_upload_whose_bytes_contradict_the_declared_md5_is_refused_for_good(
    circle, app, store, random_file, run_worker, cli
):
    users, org, dataset = circle
    alice = users["alice"]
    path = random_file(12 * MiB, "big.bin")
    answer = uploaded(app, alice, dataset, path, md5=hashlib.md5(b"other").hexdigest())
    rid = answer["resource_id"]
    object_url = store.object_url(f"test-circle-{org['id']}", object_key("resource", rid))
    download = f"/dataset/{dataset['id']}/resource/{rid}/download"
    owner = {"Authorization": token(alice)}
    # not yet verified: nobody gets it
    assert app.get(download, headers=owner, follow_redirects=False).status_code == 409

    run_worker()
    # made public afterwards: the refused file stays private, its download refused with the reason
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    run_worker()

    shown = helpers.call_action("resource_show", id=rid)
    assert not shown.get("sha256") and not shown.get("s3_available")
    assert "the upload is corrupt" in shown["s3_upload_error"]
    assert anonymous_status(object_url) == 403
    refused = app.get(download, follow_redirects=False)
    assert refused.status_code == 409 and "the upload is corrupt" in refused.get_data(as_text=True)
    caught_up = cli.invoke(run_jobs_dcor_depot, [])
    assert caught_up.exit_code == 1 and "the upload is corrupt" in caught_up.output
    assert anonymous_status(object_url) == 403


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
    assert turned.status_code == 409 and "url_type" in turned.json["error"]
    replaced = app.post(
        "/api/action/resource_patch",
        data={"id": rid, "upload": (path.open("rb"), "small.bin")},
        headers={"Authorization": token(alice)},
        content_type="multipart/form-data",
    )
    assert replaced.status_code == 409 and "cannot be replaced" in replaced.body


def test_the_id_of_a_deleted_resource_cannot_be_moved_to_another_dataset(
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
    bucket, key = f"test-circle-{org['id']}", object_key("resource", rid)
    store.client.put_object(Bucket=bucket, Key=key, Body=b"not the measurement")
    with pytest.raises(DepotError, match="it was not kept"):
        backup_resource(rid)
    assert list(copy.parent.iterdir()) == []
