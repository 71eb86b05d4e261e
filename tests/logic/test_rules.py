"""Only the extension writes what its jobs record, and a stored file never changes
(``logic/rules.py``, ``uploader.py``): tried as an organization *editor* over CKAN's API,
on every action path that writes resources."""

from __future__ import annotations

import json
import os
import uuid

import ckan.model as model
import pytest
import sqlalchemy as sa
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement, resource_fields
from ckanext.dcor_depot.cli import dcor_verify_object_store
from ckanext.dcor_depot.jobs import index
from ckanext.dcor_depot.model import file_table

from ..conftest import sha256_path

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

#: What an editor tries to set: every kind of field the jobs record.
FAKE = {
    "s3_available": True,
    "s3_url": "http://evil.invalid/x",
    "etag": "0" * 32,
    "s3_upload_error": "",
    "dc_error": "",
    "dc:experiment:event count": 1,
    "s3_condensed_sha256": "0" * 64,
    "s3_condensed_size": 1,
}
#: What the jobs recorded on the resource before (the refused upload of the issue).
RECORDED = {
    "etag": "abc",
    "s3_upload_error": "The uploaded file has MD5 x, but the client declared y",
    "dc:experiment:event count": 100,
}


@pytest.fixture
def editor_dataset():
    """An editor (not admin, not sysadmin) of a circle with a private dataset; adam is
    the circle's admin (the bulk actions are for admins only)."""
    editor = factories.User(name="edna")
    factories.User(name="adam")
    org = factories.Organization(
        users=[{"name": "edna", "capacity": "editor"}, {"name": "adam", "capacity": "admin"}]
    )
    dataset = factories.Dataset(owner_org=org["id"], private=True, user=editor)
    return editor, org, dataset


def api(app, name: str, data: dict, user: dict, **kwargs):
    token = factories.APIToken(user=user["name"])["token"]
    return app.post(f"/api/action/{name}", json=data, headers={"Authorization": token}, **kwargs)


@pytest.fixture
def recorded_file(editor_dataset, api_upload, random_file):
    """A resource with an uploaded file on which the jobs recorded fields."""
    editor, org, dataset = editor_dataset
    path = random_file(3000, "cells.bin")
    resource = api_upload(editor, dataset["id"], path)
    index.patch_resource(resource["id"], {**RECORDED, "sha256": sha256_path(path)})
    return editor, dataset, resource["id"], path


def writes(rid: str, pid: str) -> dict:
    """Each action path that can write a resource's fields, as the request it sends."""
    shown = helpers.call_action("package_show", id=pid)
    resource = next(r for r in shown["resources"] if r["id"] == rid)
    return {
        "resource_update": ("resource_update", {**resource, **FAKE, "sha256": "0" * 64}),
        "resource_patch": ("resource_patch", {"id": rid, **FAKE, "sha256": "0" * 64, "size": 1}),
        "package_update": (
            "package_update",
            {**shown, "resources": [{**resource, **FAKE, "sha256": "0" * 64, "size": 1}]},
        ),
        "package_patch": (
            "package_patch",
            {"id": pid, "resources": [{**resource, **FAKE, "sha256": "0" * 64, "size": 1}]},
        ),
        "package_revise": (
            "package_revise",
            {"match": {"id": pid}, "update__resources__0": {**FAKE, "sha256": "0" * 64}},
        ),
        "bulk_update_public": (
            "bulk_update_public",
            {"datasets": [pid], "org_id": shown["owner_org"]},
        ),
    }


@pytest.mark.parametrize(
    "path",
    [
        "resource_update",
        "resource_patch",
        "package_update",
        "package_patch",
        "package_revise",
        "bulk_update_public",
    ],
)
def test_an_editor_cannot_change_what_the_jobs_recorded(app, recorded_file, path):
    editor, dataset, rid, file = recorded_file
    before = helpers.call_action("resource_show", id=rid)
    action, data = writes(rid, dataset["id"])[path]
    user = {"name": "adam"} if action.startswith("bulk_") else editor
    answer = api(app, action, data, user)
    assert answer.status_code == 200, answer.body  # accepted; the values are dropped
    after = helpers.call_action("resource_show", id=rid)
    for field in FAKE.keys() | {"sha256", "size"}:
        assert after.get(field) == before.get(field), field
    assert after["sha256"] == sha256_path(file)
    assert after["size"] == 3000
    assert after["s3_upload_error"] == RECORDED["s3_upload_error"]
    assert "s3_available" not in after and "s3_url" not in after
    # the extension's own write still goes through
    index.patch_resource(rid, {"etag": "def"})
    assert helpers.call_action("resource_show", id=rid)["etag"] == "def"


@pytest.mark.parametrize(
    "path",
    ["resource_create", "package_create", "package_update", "package_patch", "package_revise"],
)
def test_a_new_resource_gets_none_of_the_recorded_fields(app, editor_dataset, path):
    editor, org, dataset = editor_dataset
    claims = {**FAKE, "sha256": "ab" * 32}
    new = {"url": "http://example.org/cells.rtdc", "name": "link", **claims}
    if path == "resource_create":
        answer = api(app, "resource_create", {"package_id": dataset["id"], **new}, editor)
        rid = answer.json["result"]["id"]
    elif path == "package_create":
        data = {"name": "another", "owner_org": org["id"], "resources": [new]}
        answer = api(app, "package_create", data, editor)
        rid = answer.json["result"]["resources"][0]["id"]
    elif path == "package_revise":
        data = {"match": {"id": dataset["id"]}, "update__resources__extend": [new]}
        answer = api(app, "package_revise", data, editor)
        rid = answer.json["result"]["package"]["resources"][0]["id"]
    else:
        shown = helpers.call_action("package_show", id=dataset["id"])
        data = (
            {**shown, "resources": [new]}
            if path == "package_update"
            else {
                "id": dataset["id"],
                "resources": [new],
            }
        )
        answer = api(app, path, data, editor)
        rid = answer.json["result"]["resources"][0]["id"]
    assert answer.status_code == 200, answer.body
    shown = helpers.call_action("resource_show", id=rid)
    assert not claims.keys() & shown.keys(), claims.keys() & shown.keys()


def test_a_checksum_claimed_with_an_upload_is_dropped_and_the_file_goes_its_way(
    editor_dataset, app, random_file, run_worker, store
):
    """resource_create with a file and any ``sha256``: the claim never reaches the
    resource; the jobs put the file in the depot and S3 and record its real SHA-256."""
    editor, org, dataset = editor_dataset
    path = random_file(3000, "cells.bin")
    token = factories.APIToken(user=editor["name"])["token"]
    with open(path, "rb") as fd:
        answer = app.post(
            "/api/action/resource_create",
            data={"package_id": dataset["id"], "sha256": "ab" * 32, "upload": (fd, path.name)},
            headers={"Authorization": token},
            content_type="multipart/form-data",
        )
    assert answer.status_code == 200, answer.body
    rid = answer.json["result"]["id"]
    assert "sha256" not in answer.json["result"]
    run_worker()
    shown = helpers.call_action("resource_show", id=rid)
    assert shown["sha256"] == sha256_path(path) and shown["s3_available"] is True
    assert "s3_upload_error" not in shown
    assert store.object_sha256(*placement.file_of(store, dataset["id"], rid).recorded) == (
        sha256_path(path)
    )


@pytest.mark.parametrize(
    "path", ["resource_create", "package_create", "package_update", "resource_patch"]
)
def test_url_type_s3_upload_is_set_only_by_a_registered_upload(app, editor_dataset, path):
    editor, org, dataset = editor_dataset
    new = {"id": "5b1e0f5c-2f7c-4d8e-9a4e-0c6b8d1f2a3b", "name": "x.rtdc", "url": "x"}
    new["url_type"] = resource_fields.S3_URL_TYPE
    says = "No upload of resource 5b1e0f5c-2f7c-4d8e-9a4e-0c6b8d1f2a3b is pending"
    if path == "resource_create":
        answer = api(app, "resource_create", {"package_id": dataset["id"], **new}, editor)
    elif path == "package_create":
        data = {"name": "another", "owner_org": org["id"], "resources": [new]}
        answer = api(app, "package_create", data, editor)
    elif path == "package_update":
        shown = helpers.call_action("package_show", id=dataset["id"])
        answer = api(app, "package_update", {**shown, "resources": [new]}, editor)
    else:  # a link turned into a direct upload
        link = {"package_id": dataset["id"], "url": "http://example.org/x.rtdc"}
        rid = api(app, "resource_create", link, editor).json["result"]["id"]
        answer = api(app, "resource_patch", {**new, "id": rid}, editor)
        says = "is set only by registering an upload"
    assert answer.status_code == 409, answer.body
    assert says in answer.body
    assert model.Package.get("another") is None
    resources = helpers.call_action("package_show", id=dataset["id"])["resources"]
    assert [bool(r["url_type"]) for r in resources] == ([False] if path == "resource_patch" else [])


def test_the_id_of_a_pending_upload_is_not_taken_by_another_resource(app, editor_dataset):
    editor, org, dataset = editor_dataset
    data = {"package_id": dataset["id"], "name": "cells.rtdc", "size": 3000}
    rid = api(app, "dcor_depot_upload_urls", data, editor).json["result"]["resource_id"]
    link = {"package_id": dataset["id"], "id": rid, "url": "http://example.org/x"}
    answer = api(app, "resource_create", link, editor)
    assert answer.status_code == 409, answer.body
    assert f"Resource id {rid} is reserved for a pending upload" in answer.body


def test_the_file_of_a_resource_is_never_replaced(
    app, editor_dataset, api_upload, random_file, run_worker, cli
):
    editor, org, dataset = editor_dataset
    path = random_file(3000, "cells.bin")
    rid = api_upload(editor, dataset["id"], path)["id"]
    run_worker()  # CKAN's path becomes a symlink into the depot; the object is recorded
    ckan_path = placement.ckan_path(rid)
    depot = ckan_path.resolve()
    assert ckan_path.is_symlink() and sha256_path(depot) == sha256_path(path)
    other = random_file(3000, "other.bin")

    def refused(answer):
        assert answer.status_code == 409, answer.body
        assert "add a new resource" in answer.body
        assert ckan_path.is_symlink() and ckan_path.resolve() == depot
        assert sha256_path(depot) == sha256_path(path)

    token = factories.APIToken(user=editor["name"])["token"]
    with open(other, "rb") as fd:
        refused(
            app.post(
                "/api/action/resource_patch",
                data={"id": rid, "upload": (fd, "other.bin")},
                headers={"Authorization": token},
                content_type="multipart/form-data",
            )
        )
    refused(
        api(app, "resource_patch", {"id": rid, "clear_upload": True, "url": "http://x"}, editor)
    )
    refused(api(app, "resource_patch", {"id": rid, "url": "http://example.org/other.bin"}, editor))
    # a form that shows the file as a link sends url_type "" with the same url: unchanged
    kept = api(app, "resource_patch", {"id": rid, "url_type": "", "description": "d"}, editor)
    assert kept.status_code == 200, kept.body
    assert (kept.json["result"]["url_type"], kept.json["result"]["description"]) == ("upload", "d")
    refused(api(app, "resource_patch", {"id": rid, "url_type": "link"}, editor))
    shown = helpers.call_action("package_show", id=dataset["id"])
    moved = [{**shown["resources"][0], "url": "http://x", "url_type": ""}]
    refused(api(app, "package_patch", {"id": dataset["id"], "resources": moved}, editor))
    resource = helpers.call_action("resource_show", id=rid)
    assert resource["url_type"] == "upload" and resource["url"].endswith("/cells.bin")

    # bytes changed behind CKAN's back: the audit finds it, by size and by hash
    clean = cli.invoke(dcor_verify_object_store, [])
    assert clean.exit_code == 0, clean.output
    assert "2 of 2 copies checked" in clean.output  # the object and the depot file
    depot.write_bytes(other.read_bytes())
    changed = cli.invoke(dcor_verify_object_store, [])
    assert changed.exit_code == 1
    assert f"DISAGREES depot {depot}: its bytes have SHA-256 {sha256_path(other)}" in (
        changed.output
    )
    depot.write_bytes(b"short")
    cut = cli.invoke(dcor_verify_object_store, [])
    assert cut.exit_code == 1
    assert f"DISAGREES depot {depot}: has 5 bytes, the file has 3000" in cut.output


def test_a_chosen_id_never_reaches_the_bytes_stored_under_it_before(
    editor_dataset, app, api_upload, random_file, run_worker
):
    """A private file uploaded and deleted before its jobs ran; a later change of its
    dataset made CKAN drop the deleted row. Another user's new resource with that id
    (url_type upload, no file) must not be given those bytes: the id is refused."""
    editor, org, dataset = editor_dataset
    secret = api_upload(editor, dataset["id"], random_file(3000, "secret.bin"))
    helpers.call_action("resource_delete", context={"user": editor["name"]}, id=secret["id"])
    helpers.call_action(
        "resource_create", context={"user": editor["name"]}, package_id=dataset["id"], url="x:"
    )
    assert model.Resource.get(secret["id"]) is None  # CKAN dropped the row
    model.Session.rollback()
    assert placement.ckan_path(secret["id"]).is_file()  # CKAN never removes the file

    mallory = factories.User(name="mallory")
    own = factories.Organization(users=[{"name": "mallory", "capacity": "admin"}])
    mine = factories.Dataset(owner_org=own["id"], private=False, user=mallory)
    taken = {"id": secret["id"], "url_type": "upload", "url": "secret.bin", "name": "mine"}
    # the extension recorded the file when it arrived; a file uploaded before this version
    # has no such record, only its CKAN path
    for says in ("belongs to another dataset", "was used before on this site"):
        for action, data in (
            ("resource_create", {"package_id": mine["id"], **taken}),
            ("package_patch", {"id": mine["id"], "resources": [taken]}),
            ("package_create", {"name": "mine-too", "owner_org": own["id"], "resources": [taken]}),
        ):
            answer = api(app, action, data, mallory)
            assert answer.status_code == 409, (action, answer.body)
            assert says in answer.body, answer.body
        model.Session.execute(sa.delete(file_table).where(file_table.c.resource_id == secret["id"]))
        model.Session.commit()
    # the deleted file's own job finds its resource gone; nothing else is there to work on
    (failure,) = run_worker(failures_allowed=True)
    assert failure.startswith(f"dcor-depot-file-{secret['id']}:") and "does not exist" in failure
    assert helpers.call_action("package_show", id=mine["id"])["resources"] == []


def test_the_rules_hold_on_a_dataset_that_moved_to_another_circle(
    app, editor_dataset, api_upload, random_file
):
    """CKAN 2.11's package_update commits half-way through on a dataset that has changed
    circle (its package_owner_org_update saves the old membership with Member.save()):
    the rules must still see what the request changes, not what it committed itself."""
    editor, org, dataset = editor_dataset
    path = random_file(3000, "cells.bin")
    rid = api_upload(editor, dataset["id"], path)["id"]
    index.patch_resource(rid, {**RECORDED, "sha256": sha256_path(path)})
    other = factories.Organization(users=[{"name": "edna", "capacity": "editor"}])
    moved = api(app, "package_patch", {"id": dataset["id"], "owner_org": other["id"]}, editor)
    assert moved.status_code == 200, moved.body

    shown = helpers.call_action("package_show", id=dataset["id"])
    [resource] = shown["resources"]
    changed = {**resource, "url": "http://example.org/other.bin", "url_type": ""}
    answer = api(app, "package_update", {**shown, "resources": [changed]}, editor)
    assert answer.status_code == 409, answer.body
    assert "add a new resource" in answer.body
    faked = {**resource, **FAKE, "sha256": "0" * 64, "size": 1}
    assert api(app, "package_update", {**shown, "resources": [faked]}, editor).status_code == 200
    new = {"id": "5b1e0f5c-2f7c-4d8e-9a4e-0c6b8d1f2a3b", "name": "x.rtdc", "url": "x"}
    answer = api(
        app,
        "resource_create",
        {"package_id": dataset["id"], **new, "url_type": resource_fields.S3_URL_TYPE},
        editor,
    )
    assert answer.status_code == 409, answer.body
    assert f"No upload of resource {new['id']} is pending" in answer.body

    after = helpers.call_action("package_show", id=dataset["id"])
    assert [r["id"] for r in after["resources"]] == [rid]
    [kept] = after["resources"]
    assert (kept["url_type"], kept["url"].rsplit("/", 1)[-1]) == ("upload", "cells.bin")
    assert (kept["sha256"], kept["size"], kept["etag"]) == (sha256_path(path), 3000, "abc")
    assert "s3_available" not in kept and "s3_url" not in kept


@pytest.mark.parametrize("path", ["resource_create", "package_create", "package_update"])
def test_a_chosen_resource_id_is_a_random_uuid(app, editor_dataset, path):
    """Ids the extension derives (uuid5: append-resource, the figshare import) and any
    other form cannot be chosen by a user: only random UUIDs (version 4), so no user can
    take an id before the extension derives it."""
    editor, org, dataset = editor_dataset
    chosen = [
        str(uuid.uuid5(uuid.NAMESPACE_URL, "https://dcor.mpl.mpg.de/figshare/x")),
        str(uuid.uuid1()),
        "00000000-0000-0000-0000-000000000000",
    ]

    def create(rid: str):
        new = {"id": rid, "name": "x.rtdc", "url": "http://example.org/x.rtdc"}
        if path == "resource_create":
            return api(app, "resource_create", {"package_id": dataset["id"], **new}, editor)
        if path == "package_create":
            data = {"name": f"d-{uuid.uuid4().hex[:8]}", "owner_org": org["id"], "resources": [new]}
            return api(app, "package_create", data, editor)
        shown = helpers.call_action("package_show", id=dataset["id"])
        return api(app, "package_update", {**shown, "resources": [new]}, editor)

    for rid in chosen:
        answer = create(rid)
        assert answer.status_code == 409, (rid, answer.body)
        assert f"Resource id {rid!r} is not a random UUID (version 4)" in answer.body, answer.body
        assert model.Resource.get(rid) is None
    for rid in ("not-a-uuid", "../../etc/passwd"):  # CKAN's own validation refuses these
        answer = create(rid)
        assert answer.status_code == 409, (rid, answer.body)
        assert "Invalid id provided" in answer.body
    assert helpers.call_action("package_show", id=dataset["id"])["resources"] == []
    fine = str(uuid.uuid4())
    assert create(fine).status_code == 200
    assert model.Resource.get(fine) is not None


def test_a_deleted_resource_holding_a_file_does_not_come_back(
    app, editor_dataset, api_upload, random_file
):
    """Listing a deleted resource again (package_update, package_patch) would make it
    active with a file that may have been pruned, outside the quota and the jobs: it is
    refused, and a file under an id whose CKAN row is gone is not taken by a new one."""
    editor, org, dataset = editor_dataset
    rid = api_upload(editor, dataset["id"], random_file(3000, "cells.bin"))["id"]
    shown = helpers.call_action("package_show", id=dataset["id"])
    listed = shown["resources"][0]
    assert api(app, "resource_delete", {"id": rid}, editor).status_code == 200
    says = f"Resource {rid} was deleted"
    for action, data in (
        ("package_update", {**shown, "resources": [listed]}),
        ("package_patch", {"id": dataset["id"], "resources": [listed]}),
    ):
        answer = api(app, action, data, editor)
        assert answer.status_code == 409, (action, answer.body)
        assert says in answer.body and "add a new resource" in answer.body
        assert model.Resource.get(rid).state == "deleted"
        model.Session.rollback()

    # CKAN dropped the row (a later change of the dataset can); the file's record stays
    model.Session.execute(sa.text("DELETE FROM resource WHERE id = :id"), {"id": rid})
    model.Session.commit()
    for url in ("", "cells.bin", "http://example.org/x"):
        again = {"package_id": dataset["id"], "id": rid, "name": "again", "url": url}
        answer = api(app, "resource_create", again, editor)
        assert answer.status_code == 409, (url, answer.body)
        assert f"Resource id {rid} was used before on this site" in answer.body
    assert model.Resource.get(rid) is None


def test_a_refused_upload_leaves_no_file_behind(app, editor_dataset, random_file):
    """CKAN writes an upload before the rules that refuse it run: a refused id (one the
    extension would derive) or a request refused for another of its resources leaves no
    file at CKAN's path (it would block the id for good and count against nothing)."""
    editor, org, dataset = editor_dataset
    token = factories.APIToken(user=editor["name"])["token"]
    path = random_file(3000, "cells.bin")
    derived = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://dcor.mpl.mpg.de/figshare/y"))
    chosen = str(uuid.uuid4())
    bad = {"id": str(uuid.uuid1()), "name": "x", "url": "http://example.org/x"}
    attempts = [
        ("resource_create", {"package_id": dataset["id"], "id": derived, "name": "c"}, derived),
        (
            "package_revise",
            {
                "match": json.dumps({"id": dataset["id"]}),
                "update__resources__extend": json.dumps([{"id": chosen, "name": "c"}, bad]),
                "update__resources__-2__upload": None,
            },
            chosen,
        ),
    ]
    for action, data, rid in attempts:
        with open(path, "rb") as fd:
            field = "upload" if action == "resource_create" else "update__resources__-2__upload"
            answer = app.post(
                f"/api/action/{action}",
                data={**{k: v for k, v in data.items() if v is not None}, field: (fd, path.name)},
                headers={"Authorization": token},
                content_type="multipart/form-data",
            )
        assert answer.status_code == 409, (action, answer.body)
        assert "is not a random UUID (version 4)" in answer.body
        assert not os.path.lexists(placement.ckan_path(rid)), action
        assert model.Resource.get(rid) is None
    # a sysadmin may restore a resource with its id
    sysadmin = factories.Sysadmin()
    restore = {"package_id": dataset["id"], "id": derived, "url": "http://example.org/r"}
    restored = api(app, "resource_create", restore, sysadmin)
    assert restored.status_code == 200, restored.body
    assert restored.json["result"]["id"] == derived


def test_a_savepoint_rolled_back_does_not_make_the_rules_forget_earlier_changes():
    """The rules compare the resources a transaction changed, noted at each flush. A
    savepoint rolled back later in the same transaction (CKAN 2.12's package_update does
    it with ``defer_commit``) must not make them forget a change flushed before it: the
    recorded fields keep their committed values."""
    from ckanext.dcor_depot.logic import rules

    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"])
    created = helpers.call_action(
        "resource_create", package_id=dataset["id"], url="https://example.org/a.txt", name="a"
    )
    model.Session.rollback()
    package = model.Package.get(dataset["id"])
    resource = model.Resource.get(created["id"])
    resource.extras = {**(resource.extras or {}), "s3_available": True, "s3_url": "http://evil"}
    model.Session.flush()
    model.Session.begin_nested().rollback()
    rules.keep_records(package)
    model.Session.commit()
    extras = model.Session.execute(
        sa.text("SELECT extras FROM resource WHERE id = :id"), {"id": created["id"]}
    ).scalar()
    assert not {"s3_available", "s3_url"} & set(json.loads(extras or "{}"))
