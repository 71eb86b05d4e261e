"""Every CKAN path that adds a file queues its jobs when the change commits: the file
is moved into the depot, uploaded and verified, or (uploaded straight to S3)
verified, on each path, as an editor who is neither the circle's admin nor a sysadmin.

CKAN's API does not unflatten multipart forms except for ``package_revise``: a file
itself travels with ``resource_create``, ``resource_update``/``resource_patch`` and
``package_revise``; ``package_create``, ``package_update`` and ``package_patch`` add files
by registering an upload straight to S3 (JSON); ``package_create`` one granted to the
circle (DCOR-Aid's ``resource_upload_s3_urls``: a grant of a dataset names one that
exists already)."""

from __future__ import annotations

import json
from pathlib import Path

import ckan.model as model
import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement, resource_fields
from ckanext.dcor_depot.jobs import queue
from ckanext.dcor_depot.storage.s3 import object_key

from ..conftest import http, object_sha256, sha256_path
from ..logic.test_upload_route import readme_client

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

UPLOADS = ["resource_create", "resource_patch", "resource_update", "package_revise"]
REGISTRATIONS = [
    "resource_create",
    "package_create",
    "package_update",
    "package_patch",
    "package_revise",
]


@pytest.fixture
def editor_dataset():
    editor = factories.User(name="edna")
    org = factories.Organization(users=[{"name": "edna", "capacity": "editor"}])
    dataset = factories.Dataset(owner_org=org["id"], private=True, user=editor)
    token = factories.APIToken(user="edna")["token"]
    return {"Authorization": token}, org, dataset


def post(app, action: str, headers: dict, json_data=None, form=None):
    if form is not None:
        return app.post(
            f"/api/action/{action}", data=form, headers=headers, content_type="multipart/form-data"
        )
    return app.post(f"/api/action/{action}", json=json_data, headers=headers)


def assert_stored(store, org: dict, resource_id: str, path: Path) -> None:
    """What the jobs do: the verified object in the circle bucket, its SHA-256 and size
    recorded on the resource."""
    shown = helpers.call_action("resource_show", id=resource_id)
    assert (shown.get("sha256"), shown.get("size")) == (sha256_path(path), path.stat().st_size)
    bucket = store.circle_bucket(org["id"])
    assert object_sha256(store, bucket, object_key("resource", resource_id)) == sha256_path(path)
    assert placement.file_of(store, shown["package_id"], resource_id).recorded is not None


@pytest.mark.parametrize("path", UPLOADS)
def test_a_file_uploaded_through_ckan_gets_its_jobs_on_every_path(
    app, editor_dataset, store, random_file, run_worker, path
):
    headers, org, dataset = editor_dataset
    file = random_file(2 * 1024 * 1024, "cells.bin")
    with open(file, "rb") as fd:
        upload = (fd, file.name)
        if path == "resource_create":
            form = {"package_id": dataset["id"], "name": file.name, "upload": upload}
            answer = post(app, path, headers, form=form)
            rid = answer.json["result"]["id"] if answer.status_code == 200 else None
        elif path in ("resource_patch", "resource_update"):
            link = {"package_id": dataset["id"], "name": "link", "url": "http://example.org/x"}
            rid = post(app, "resource_create", headers, link).json["result"]["id"]
            answer = post(app, path, headers, form={"id": rid, "upload": upload})
        else:  # DCOR-Aid's fallback when resource_upload_s3_urls is missing
            form = {
                "match": json.dumps({"id": dataset["id"]}),
                "update__resources__extend": json.dumps([{"name": file.name}]),
                "update__resources__-1__upload": upload,
            }
            answer = post(app, path, headers, form=form)
            rid = answer.json["result"]["package"]["resources"][-1]["id"]
    assert answer.status_code == 200, answer.body
    shown = helpers.call_action("resource_show", id=rid)
    assert shown["url_type"] == "upload"
    run_worker()
    assert_stored(store, org, rid, file)
    assert placement.ckan_path(rid).is_symlink()  # moved into the depot


@pytest.mark.parametrize("path", REGISTRATIONS)
def test_a_file_uploaded_straight_to_s3_gets_its_jobs_on_every_path(
    app, editor_dataset, store, random_file, run_worker, path
):
    headers, org, dataset = editor_dataset
    file = random_file(3000, "cells.bin")
    if path == "package_create":
        query = {"organization_id": org["id"], "file_size": file.stat().st_size}
        granted = app.get(
            "/api/action/resource_upload_s3_urls", query_string=query, headers=headers
        )
        assert granted.status_code == 200, granted.body
        [url] = granted.json["result"]["upload_urls"]
        assert http.put(url, data=file.read_bytes(), timeout=30).status_code == 200
        rid = granted.json["result"]["resource_id"]
        created = {"owner_org": org["id"], "resources": [{"id": rid, "name": file.name}]}
        answer = post(app, path, headers, {"name": "new-one", **created})
        assert answer.status_code == 200, answer.body
        run_worker()
        assert_stored(store, org, rid, file)
        return
    ask = {"package_id": dataset["id"], "name": file.name, "size": file.stat().st_size}
    granted = post(app, "dcor_depot_upload_urls", headers, ask)
    assert granted.status_code == 200, granted.body
    granted = granted.json["result"]
    readme_client()["send_to_s3"](granted["upload"], file)
    rid = granted["resource_id"]
    new = {"id": rid, "name": file.name, "url_type": resource_fields.S3_URL_TYPE}
    if path == "resource_create":
        answer = post(app, path, headers, granted["register"]["data"])
    elif path == "package_update":
        shown = helpers.call_action("package_show", id=dataset["id"])
        answer = post(app, path, headers, {**shown, "resources": [new]})
    elif path == "package_patch":
        answer = post(app, path, headers, {"id": dataset["id"], "resources": [new]})
    else:
        revise = {"match": {"id": dataset["id"]}, "update__resources__extend": [new]}
        answer = post(app, path, headers, revise)
    assert answer.status_code == 200, answer.body
    run_worker()
    assert_stored(store, org, rid, file)


def test_work_after_commit_waits_for_the_real_commit_not_a_savepoint():
    """CKAN 2.12's package_update releases a savepoint before CKAN commits, and SQLAlchemy
    announces that as a commit too: nothing may be queued then (a rollback after it would
    leave jobs for resources that never were)."""
    called = []
    session = model.Session()
    for ending in ("rollback", "commit"):
        nested = session.begin_nested()
        session.add(model.Group(name=f"probe-{ending}"))
        session.flush()
        queue.after_commit(called.append, ending)
        nested.commit()
        assert called == [], "queued when a savepoint was released"
        getattr(session, ending)()
    assert called == ["commit"]
    assert model.Group.get("probe-rollback") is None
