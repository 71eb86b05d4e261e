"""Rows no command expects never stop a site-wide command: each is one failed item, named,
and the rest goes on (run-jobs-dcor-depot with its sweep, dcor-prune-orphaned-objects,
dcor-verify-object-store, the migration, the listings). A new resource or dataset with
an id in another form than the canonical one is refused when it is created."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid

import ckan.model as model
import pytest
import sqlalchemy as sa
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import (
    dcor_list_s3_objects_for_dataset,
    dcor_migrate_resources_to_object_store,
    dcor_prune_orphaned_objects,
    dcor_verify_object_store,
    list_all_resources,
    run_jobs_dcor_depot,
)
from ckanext.dcor_depot.model import depot_files, file_table

from ..conftest import anonymous_status, appended

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


def resource_row(package_id: str, resource_id: str, **fields) -> None:
    """A resource row written past CKAN's actions, as one an older version let in."""
    resource = model.Resource(
        package_id=package_id,
        url=fields.pop("url", "x.bin"),
        url_type=fields.pop("url_type", "upload"),
        name=fields.pop("name", "x.bin"),
        **fields,
    )
    resource.id, resource.state = resource_id, "active"
    model.Session.add(resource)
    model.Session.commit()


@pytest.fixture
def site(cli, store, random_file, api_upload):
    """Healthy datasets beside every kind of row a command might choke on."""
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    good = factories.Dataset(owner_org=org["id"], private=False, user=user)
    kept = appended(cli, good, random_file(3000, name="kept.bin"))
    uploaded = api_upload(user, good["id"], random_file(2000, name="uploaded.bin"))
    bucket = store.circle_bucket(org["id"])

    # 1. a resource (and its recorded object) with an upper-case id, in its own dataset
    odd = factories.Dataset(owner_org=org["id"], private=False, user=user)
    odd_id = str(uuid.uuid4()).upper()
    resource_row(odd["id"], odd_id)
    odd_key = f"resource/{odd_id[:3]}/{odd_id[3:6]}/{odd_id[6:]}"
    store.client.put_object(Bucket=bucket, Key=odd_key, Body=b"odd")
    store.set_public(bucket, odd_key, True)  # as if it had been public once
    model.Session.execute(
        sa.insert(file_table).values(
            resource_id=odd_id,
            artifact="resource",
            package_id=odd["id"],
            bucket=bucket,
            key=odd_key,
            sha256=hashlib.sha256(b"odd").hexdigest(),
            size=3,
            recorded=datetime.datetime(2026, 1, 1),
        )
    )
    # 2. a dataset without a circle, with an upload
    lonely = factories.Dataset(owner_org=org["id"], user=user)
    api_upload(user, lonely["id"], random_file(1000, name="lonely.bin"))
    model.Session.execute(
        sa.text("UPDATE package SET owner_org = NULL WHERE id = :id"), {"id": lonely["id"]}
    )
    # 3. an object whose metadata is garbage (the file of a healthy resource)
    garbled = appended(cli, good, random_file(4000, name="garbled.bin"))
    where = placement.file_of(store, good["id"], garbled["id"]).recorded
    store.client.copy_object(
        Bucket=where.bucket,
        Key=where.key,
        CopySource={"Bucket": where.bucket, "Key": where.key},
        MetadataDirective="REPLACE",
        Metadata={"sha256": "not a hash", "dcor-size": "many", "md5": "not-an-md5"},
    )
    # 3b. a resource whose recorded fields do not parse (written before the guard)
    unreadable = appended(cli, good, random_file(4500, name="unreadable.bin"))
    resource = model.Resource.get(unreadable["id"])
    resource.extras = {**resource.extras, "s3_condensed_sha256": "ab", "s3_condensed_size": "many"}
    model.Session.commit()
    # 4. rows of a purged dataset, one of them with nothing where its object was
    doomed = factories.Dataset(owner_org=org["id"], user=user)
    appended(cli, doomed, random_file(5000, name="doomed.bin"))
    helpers.call_action("dataset_purge", id=doomed["id"])
    model.Session.execute(
        sa.insert(file_table).values(
            resource_id=str(uuid.uuid4()),
            artifact="resource",
            package_id=str(uuid.uuid4()),
            bucket=None,
            key=None,
            recorded=datetime.datetime(2026, 1, 1),
            purged=datetime.datetime(2026, 1, 1),
        )
    )
    model.Session.commit()
    return {
        "good": good,
        "kept": kept,
        "uploaded": uploaded,
        "odd": odd,
        "odd_id": odd_id,
        "lonely": lonely,
        "garbled": garbled,
        "unreadable": unreadable,
        "doomed": doomed,
    }


def test_one_bad_row_is_one_failed_item_and_every_other_dataset_is_served(
    site, cli, store, ckan_config, monkeypatch
):
    good, odd_id = site["good"], site["odd_id"]
    # someone removes the public tag of a healthy file: the sweep must still find it
    kept = placement.file_of(store, good["id"], site["kept"]["id"]).recorded
    store.set_public(*kept, False)

    odd = depot_files.file_records(resource_ids=[odd_id])[0]
    assert anonymous_status(store.object_url(odd.bucket, odd.key)) == 200
    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert any(odd_id in line and "canonical" in line for line in failed), failed
    assert any(site["lonely"]["name"] in line and "no circle" in line for line in failed), failed
    unreadable = site["unreadable"]["id"]
    assert any(unreadable in line and "invalid literal" in line for line in failed), failed
    # everything else was done: the upload's jobs ran, the healthy dataset converged
    uploaded = helpers.call_action("resource_show", id=site["uploaded"]["id"])
    assert uploaded["s3_available"] is True
    assert anonymous_status(store.object_url(*kept)) == 200
    assert f"resource {site['uploaded']['id']}" in result.output
    # a file the depot cannot place is never public
    assert anonymous_status(store.object_url(odd.bucket, odd.key)) == 403

    audit = cli.invoke(dcor_verify_object_store, ["--json"])
    assert audit.exit_code == 1
    report = json.loads(audit.stdout)
    checked_ok = {f["resource_id"] for f in report["findings"]}
    assert report["copies_checked"] >= 3  # the healthy copies were checked
    assert site["kept"]["id"] not in checked_ok  # and found right
    (odd,) = [f for f in report["findings"] if f["resource_id"] == odd_id]
    assert odd["kind"] == "error" and "canonical" in odd["detail"], odd

    migrated = cli.invoke(dcor_migrate_resources_to_object_store, [])
    assert migrated.exit_code == 1, migrated.output
    assert odd_id in migrated.output or site["lonely"]["name"] in migrated.output

    listing = cli.invoke(list_all_resources, [])
    assert listing.exit_code == 0 and odd_id in listing.output
    objects = cli.invoke(dcor_list_s3_objects_for_dataset, [site["odd"]["name"]])
    assert objects.exit_code == 1 and odd_id in objects.output and "canonical" in objects.output
    objects = cli.invoke(dcor_list_s3_objects_for_dataset, [good["name"]])
    assert objects.exit_code == 1 and f"FAILED resource {unreadable} (resource)" in objects.output
    assert f"Dataset {good['name']}: 3 public, 1 private" in objects.output  # the others listed

    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.purge_retention_days", "0")
    pruned = cli.invoke(dcor_prune_orphaned_objects, [])
    assert pruned.exit_code == 0, pruned.output
    # the purged dataset's object is gone, and so is the row with nothing where its object
    # was; the odd resource's object and every living file stay
    assert depot_files.file_records(package_ids=[site["doomed"]["id"]]) == []
    assert "2 purged files past 0 days: 1 objects and 0 local copies removed" in pruned.output
    assert "0 orphaned objects removed" in pruned.output and "0 failed" in pruned.output
    odd = depot_files.file_records(resource_ids=[odd_id])[0]
    assert store.object_info(odd.bucket, odd.key) is not None
    assert anonymous_status(store.object_url(*kept)) == 200


@pytest.mark.parametrize(
    "form",
    [str.upper, lambda i: i.replace("-", ""), lambda i: "{" + i + "}", lambda i: "urn:uuid:" + i],
    ids=["upper-case", "no-hyphens", "braces", "urn"],
)
def test_a_resource_id_in_another_form_is_refused_at_creation(app, form):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "editor"}])
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    canonical = str(uuid.uuid4())
    token = factories.APIToken(user=user["name"])["token"]
    headers = {"Authorization": token}
    for action, data in (
        ("resource_create", {"package_id": dataset["id"], "id": form(canonical), "url": "x:"}),
        ("package_patch", {"id": dataset["id"], "resources": [{"id": form(canonical)}]}),
    ):
        answer = app.post(f"/api/action/{action}", json=data, headers=headers)
        assert answer.status_code == 409, (action, answer.body)
        assert f"use {canonical}" in answer.body, answer.body
    assert helpers.call_action("package_show", id=dataset["id"])["resources"] == []
    sysadmin = factories.Sysadmin()
    answer = app.post(
        "/api/action/package_create",
        json={"name": "odd", "id": form(str(uuid.uuid4())), "owner_org": org["id"]},
        headers={"Authorization": factories.APIToken(user=sysadmin["name"])["token"]},
    )
    assert answer.status_code == 409 and "canonical" in answer.body, answer.body
