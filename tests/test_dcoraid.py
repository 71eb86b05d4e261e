"""DCOR-Aid, DCOR's own client (PyPI ``dcoraid``, pinned in ``scripts/venv.sh``), against
the site with the plugin ``dcor_depot_dcoraid``: its dataset creation, upload job and
download job, unmodified, as an editor of a circle (not its admin, not a sysadmin)."""

from __future__ import annotations

import datetime
import hashlib
import re
import urllib.parse
from pathlib import Path

import ckan.model as model
import pytest
import requests
from ckan.tests import factories, helpers
from dcoraid.api import CKANAPI, dataset_create
from dcoraid.api.errors import APIAuthorizationError, APIConflictError
from dcoraid.download.job import DownloadJob
from dcoraid.upload.job import UploadJob

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import dcor_prune_orphaned_objects
from ckanext.dcor_depot.logic.dcoraid import layout
from ckanext.dcor_depot.model import grants
from ckanext.dcor_depot.operations import prune as prune_operations
from ckanext.dcor_depot.storage.s3 import object_key

from .conftest import anonymous_status, demo, derived_ini, http, object_sha256, sha256_path
from .logic.test_upload_route import expire

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

GiB = 1024**3
PASSWORD = "a password of edna"


@pytest.fixture
def site(ckan_server, monkeypatch):
    """CKAN's web server, an editor ``edna`` of the circle ``hl60-lab``, and DCOR-Aid's
    API object for her (its S3 requests trust the stack's CA as a user's would)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", demo.store_ca_bundle() or "")
    server = ckan_server()
    factories.User(name="edna", password=PASSWORD)
    org = factories.Organization(name="hl60-lab", users=[{"name": "edna", "capacity": "editor"}])
    token = factories.APIToken(user="edna")["token"]
    api = CKANAPI(server.url, api_key=token, caching=False)
    return server, org, api


def new_dataset(api: CKANAPI, org: dict, private: bool) -> dict:
    """As DCOR-Aid's upload dialog creates one: no name, a draft."""
    return dataset_create(
        {
            "title": "HL60 cells",
            "authors": "Edna",
            "license_id": "CC-BY-4.0" if not private else "none",
            "notes": "measured",
            "private": private,
            "owner_org": org["id"],
        },
        api=api,
    )


def upload(api: CKANAPI, dataset: dict, paths: list[Path], run_worker, ini: str, tmp_path):
    job = UploadJob(api, dataset["id"], paths, cache_dir=tmp_path / "dcoraid-cache")
    job.task_compress_resources()
    job.task_upload_resources()
    assert job.state == "online", job.traceback
    run_worker(ini)  # the jobs that record etag, sha256 and size
    job.task_verify_resources()
    assert job.state == "done", job.traceback
    return job


@pytest.mark.parametrize("private", [True, False])
def test_dcoraid_uploads_and_downloads_a_file(
    site, rtdc_file, random_file, store, run_worker, tmp_path, private
):
    server, org, api = site
    dataset = new_dataset(api, org, private)
    assert dataset["name"].startswith("hl60-cells-")
    assert helpers.call_action("package_show", id=dataset["id"])["state"] == "draft"
    path = rtdc_file()
    job = upload(api, dataset, [path], run_worker, server.ini, tmp_path)
    assert job.paths_uploaded  # DCOR-Aid sent it (compressed, when it was not)
    sent = Path(job.paths[0])

    shown = helpers.call_action("package_show", id=dataset["id"])
    assert shown["state"] == "active"  # DCOR-Aid activated it after verifying
    run_worker(server.ini)  # its convergence: public or not as CKAN says now
    [resource] = shown["resources"]
    assert resource["url_type"] == "s3_upload"
    assert (resource["sha256"], resource["size"]) == (sha256_path(sent), sent.stat().st_size)
    assert resource["etag"] == hashlib.md5(sent.read_bytes()).hexdigest()  # one PUT
    bucket = store.circle_bucket(org["id"])
    key = object_key("resource", resource["id"])
    assert object_sha256(store, bucket, key) == sha256_path(sent)
    assert placement.file_of(store, dataset["id"], resource["id"]).recorded is not None
    assert anonymous_status(store.object_url(bucket, key)) == (403 if private else 200)
    assert grants.get(resource["id"]).state == grants.REGISTERED
    model.Session.rollback()

    target = tmp_path / "downloads"
    target.mkdir()
    download = DownloadJob(api, resource["id"], target)
    download.task_download_resource()
    download.task_verify_resource()
    assert download.state == "done", download.traceback
    assert sha256_path(download.path) == sha256_path(sent)


def test_dcoraid_uploads_a_file_of_several_parts(
    site, rtdc_file, random_file, store, run_worker, tmp_path
):
    """DCOR-Aid has no multipart below 1 GiB + 1 byte: two parts of 512 MiB + 1 byte,
    next to the DC file it wants in every upload (one PUT). The store's ETag of the
    object (the MD5 of its parts' MD5s, which it computed from the bytes it received)
    shows that it holds the file's bytes: not read back (1 GiB)."""
    server, org, api = site
    dataset = new_dataset(api, org, private=True)
    size = GiB + 1
    assert layout(size) == GiB // 2 + 1
    large = random_file(size, "large.bin")
    upload(api, dataset, [rtdc_file(), large], run_worker, server.ini, tmp_path)

    sha256, part_md5s = hashlib.sha256(), b""
    with open(large, "rb") as fd:
        while part := fd.read(layout(size)):
            sha256.update(part)
            part_md5s += hashlib.md5(part).digest()
    etag = f"{hashlib.md5(part_md5s).hexdigest()}-2"
    shown = helpers.call_action("package_show", id=dataset["id"])
    resource = next(r for r in shown["resources"] if r["name"] == "large.bin")
    assert (resource["sha256"], resource["size"], resource["etag"]) == (
        sha256.hexdigest(),
        size,
        etag,
    )
    bucket = store.circle_bucket(org["id"])
    stored = store.object_info(bucket, object_key("resource", resource["id"]))
    assert (stored.etag, stored.size) == (etag, size)


def test_what_the_site_refuses_reaches_dcoraid_as_a_message(site, ckan_server, tmp_path):
    """Quota, size and permission: DCOR-Aid raises the site's message (a 409 or 403, never
    the 400 after which it falls back to uploading through CKAN)."""
    server, org, api = site
    circle = {"organization_id": org["id"]}
    with pytest.raises(APIConflictError, match="file_size is '0'"):
        api.get("resource_upload_s3_urls", file_size=0, **circle)
    with pytest.raises(APIConflictError, match=r"at most \d+ bytes .*upload_max_gib"):
        api.get("resource_upload_s3_urls", file_size=6 * 1024**4, **circle)
    factories.User(name="olga")
    other = CKANAPI(server.url, api_key=factories.APIToken(user="olga")["token"], caching=False)
    with pytest.raises(APIAuthorizationError):
        other.get("resource_upload_s3_urls", file_size=1000, **circle)
    with pytest.raises(APIAuthorizationError):  # a circle that does not exist: the same
        other.get("resource_upload_s3_urls", file_size=1000, organization_id="no-such")
    # a browser's session (another site's GET, also with a header CKAN does not take)
    # gets nothing granted
    session = requests.Session()
    form = session.get(f"{server.url}/user/login", timeout=30).text
    csrf = re.search(r'name="_csrf_token" value="([^"]+)"', form).group(1)
    login = session.post(
        f"{server.url}/user/login",
        data={"login": "edna", "password": PASSWORD, "_csrf_token": csrf},
        timeout=30,
    )
    assert login.ok and "/dashboard" in login.url, login.url  # logged in
    for headers in ({}, {"Authorization": "x"}):
        ask = {"file_size": 1000, **circle}
        answer = session.get(
            f"{server.url}/api/action/resource_upload_s3_urls",
            params=ask,
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 403, (headers, answer.text)
        assert "takes an API token" in answer.text
    assert (
        requests.get(
            f"{server.url}/api/action/resource_upload_s3_urls",
            params={"file_size": 1000, **circle},
            timeout=30,
        ).status_code
        == 403
    )

    quota = ckan_server(str(derived_ini(tmp_path, **{"ckanext.dcor_depot.circle_quota_gib": "1"})))
    limited = CKANAPI(quota.url, api_key=api.api_key, caching=False)
    answer = limited.get("resource_upload_s3_urls", file_size=GiB - 10, **circle)
    assert len(answer["upload_urls"]) == 1 and answer["complete_url"] is None
    with pytest.raises(APIConflictError, match="Circle hl60-lab uses .* does not fit"):
        limited.get("resource_upload_s3_urls", file_size=11, **circle)


def test_a_grant_of_a_circle_is_registered_by_its_user_in_that_circle_only(
    app, random_file, store, cli, monkeypatch
):
    """resource_upload_s3_urls names no dataset: its grant belongs to the circle and the
    user who asked. Another editor of the circle, or the user in another circle, cannot
    register it; the user can, in any dataset of the circle."""
    for name in ("alice", "bob"):
        factories.User(name=name)
    editors = [{"name": "alice", "capacity": "editor"}, {"name": "bob", "capacity": "editor"}]
    org = factories.Organization(users=editors)
    other = factories.Organization(users=editors[:1])
    mine = factories.Dataset(owner_org=org["id"], private=True, user={"name": "alice"})
    elsewhere = factories.Dataset(owner_org=other["id"], private=True, user={"name": "alice"})
    tokens = {n: factories.APIToken(user=n)["token"] for n in ("alice", "bob")}
    path = random_file(3000, "cells.rtdc")
    granted = app.get(
        "/api/action/resource_upload_s3_urls",
        query_string={"organization_id": org["id"], "file_size": 3000},
        headers={"Authorization": tokens["alice"]},
    )
    assert granted.status_code == 200, granted.body
    answer = granted.json["result"]
    [url] = answer["upload_urls"]
    assert http.put(url, data=path.read_bytes(), timeout=30).status_code == 200

    def register(user: str, dataset: dict):
        revise = {
            "match": {"id": dataset["id"]},
            "update__resources__extend": [
                {"id": answer["resource_id"], "name": path.name, "s3_available": True}
            ],
        }
        headers = {"Authorization": tokens[user]}
        return app.post("/api/action/package_revise", json=revise, headers=headers)

    for user, dataset in (("bob", mine), ("alice", elsewhere)):
        refused = register(user, dataset)
        assert refused.status_code == 409, (user, refused.body)
        assert "was issued to another user or circle" in refused.body
    # a registration that rolls back after the copy was made (another resource of the
    # same request is refused): the copy is removed when the grant expires
    bad = {"id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "name": "x", "url": "x:"}
    refused = app.post(
        "/api/action/package_revise",
        json={
            "match": {"id": mine["id"]},
            "update__resources__extend": [{"id": answer["resource_id"], "name": path.name}, bad],
        },
        headers={"Authorization": tokens["alice"]},
    )
    assert refused.status_code == 409, refused.body
    bucket = store.circle_bucket(org["id"])
    key = object_key("resource", answer["resource_id"])
    registered = register("alice", mine)
    assert registered.status_code == 200, registered.body
    [resource] = registered.json["result"]["package"]["resources"]
    assert (resource["url_type"], resource["size"]) == ("s3_upload", 3000)
    assert "s3_available" not in resource  # the jobs record it

    # the same for a grant never registered: its copy in the circle bucket goes too
    again = app.get(
        "/api/action/resource_upload_s3_urls",
        query_string={"organization_id": org["id"], "file_size": 3000},
        headers={"Authorization": tokens["alice"]},
    ).json["result"]
    assert http.put(again["upload_urls"][0], data=path.read_bytes(), timeout=30).status_code == 200
    refused = app.post(
        "/api/action/package_revise",
        json={
            "match": {"id": mine["id"]},
            "update__resources__extend": [{"id": again["resource_id"], "name": "b.rtdc"}, bad],
        },
        headers={"Authorization": tokens["alice"]},
    )
    assert refused.status_code == 409, refused.body
    left = object_key("resource", again["resource_id"])
    assert store.object_info(bucket, left) is not None  # the copy the rollback left
    monkeypatch.setattr(prune_operations, "STAGED_GRACE", datetime.timedelta(0))
    expire(again["resource_id"])
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    assert store.object_info(bucket, left) is None
    assert store.object_info(bucket, key) is not None  # the registered one stays


def test_without_uploads_straight_to_s3_dcoraid_sends_the_file_through_ckan(
    ckan_server, rtdc_file, store, run_worker, tmp_path, monkeypatch
):
    """A site without an upload identity has no resource_upload_s3_urls: DCOR-Aid falls
    back to package_revise with the file (its legacy upload), whose jobs put it in the
    depot and in S3 like any upload."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", demo.store_ca_bundle() or "")
    options = {
        "dcor_object_store.upload_access_key_id": "",
        "dcor_object_store.upload_secret_access_key": "",
    }
    server = ckan_server(str(derived_ini(tmp_path, **options)))
    factories.User(name="edna")
    org = factories.Organization(users=[{"name": "edna", "capacity": "editor"}])
    api = CKANAPI(server.url, api_key=factories.APIToken(user="edna")["token"], caching=False)
    dataset = new_dataset(api, org, private=True)
    path = rtdc_file()
    job = upload(api, dataset, [path], run_worker, server.ini, tmp_path)
    sent = Path(job.paths[0])
    [resource] = helpers.call_action("package_show", id=dataset["id"])["resources"]
    assert resource["url_type"] == "upload"
    assert (resource["sha256"], resource["size"]) == (sha256_path(sent), sent.stat().st_size)
    depot = placement.ckan_path(resource["id"])
    assert depot.is_symlink() and sha256_path(depot.resolve()) == sha256_path(sent)
    bucket = store.circle_bucket(org["id"])
    assert object_sha256(store, bucket, object_key("resource", resource["id"])) == sha256_path(sent)


def test_upstream_who_may_ask_and_twenty_urls_for_twenty_gib(app):
    """Upstream DCOR's scenarios (ckanext-dcor_schemas' tests of resource_upload_s3_urls):
    anonymous users, users outside the circle and its members (who may not create
    datasets) are refused; its editors and admins get URLs; a file of 20 GiB gets 20
    part URLs and a complete_url."""
    names = ("adam", "edna", "mia", "olga")
    for name in names:
        factories.User(name=name)
    capacities = {"adam": "admin", "edna": "editor", "mia": "member"}
    org = factories.Organization(users=[{"name": n, "capacity": c} for n, c in capacities.items()])
    tokens = {n: factories.APIToken(user=n)["token"] for n in names}

    def ask(user: str | None, size: int):
        headers = {"Authorization": tokens[user]} if user else {}
        query = {"organization_id": org["id"], "file_size": size}
        return app.get("/api/action/resource_upload_s3_urls", query_string=query, headers=headers)

    for user in (None, "olga", "mia"):
        assert ask(user, 1000).status_code == 403, user
    for user in ("adam", "edna"):
        answer = ask(user, 1000)
        assert answer.status_code == 200, (user, answer.body)
        assert len(answer.json["result"]["upload_urls"]) == 1
    twenty = ask("edna", 20 * GiB).json["result"]
    assert len(twenty["upload_urls"]) == 20
    assert twenty["complete_url"] is not None
    assert grants.get(twenty["resource_id"]).part_size == GiB


def test_an_upload_cut_by_the_network_is_sent_again_by_dcoraid(
    ckan_server, forwarder, rtdc_file, store, run_worker, tmp_path, monkeypatch
):
    """The connection of DCOR-Aid's PUT is cut half-way (users reach the store through a
    forwarder, dcor_object_store.public_endpoint_url): DCOR-Aid sends the file again by
    itself with the same URL, and the registered object holds the file's bytes."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", demo.store_ca_bundle() or "")
    path = rtdc_file(2000)
    gateway = urllib.parse.urlsplit(store.settings.endpoint_url).port
    users = forwarder(gateway, cut_after=path.stat().st_size // 2)
    public = f"https://localhost:{users.port}"
    server = ckan_server(
        str(derived_ini(tmp_path, **{"dcor_object_store.public_endpoint_url": public}))
    )
    factories.User(name="edna")
    org = factories.Organization(users=[{"name": "edna", "capacity": "editor"}])
    api = CKANAPI(server.url, api_key=factories.APIToken(user="edna")["token"], caching=False)
    dataset = new_dataset(api, org, private=True)
    job = upload(api, dataset, [path], run_worker, server.ini, tmp_path)
    assert users.cuts == 1  # the first PUT was cut
    sent = Path(job.paths[0])
    [resource] = helpers.call_action("package_show", id=dataset["id"])["resources"]
    assert (resource["sha256"], resource["size"]) == (sha256_path(sent), sent.stat().st_size)
    bucket = store.circle_bucket(org["id"])
    assert object_sha256(store, bucket, object_key("resource", resource["id"])) == sha256_path(sent)
