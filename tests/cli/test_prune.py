"""Purged files: unreadable at once, removed by ``ckan dcor-prune-orphaned-objects``
after ``ckanext.dcor_depot.purge_retention_days``; what a resource records stays."""

from __future__ import annotations

import os

import ckan.model as model
import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import append_resource, dcor_prune_orphaned_objects
from ckanext.dcor_depot.jobs import converge
from ckanext.dcor_depot.jobs.resource_jobs import RESOURCE_JOBS
from ckanext.dcor_depot.model import depot_files
from ckanext.dcor_depot.storage.depot import backup_path_for
from ckanext.dcor_depot.storage.s3 import object_key

from ..conftest import anonymous_status

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


@pytest.fixture
def backups(tmp_path, ckan_config, monkeypatch):
    folder = tmp_path / "backup"
    monkeypatch.setitem(ckan_config, "dcor_object_store.local_backup_location", str(folder))
    return folder


def test_purged_files_are_kept_unreadable_then_removed(
    api_upload, random_file, cli, store, backups, ckan_config, monkeypatch
):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "editor"}])
    doomed = factories.Dataset(owner_org=org["id"], private=False, user=user)
    living = factories.Dataset(owner_org=org["id"], private=False, user=user)
    local = api_upload(user, doomed["id"], random_file(3000, name="local.bin"))
    for kind in ("symlink", "s3-upload"):
        RESOURCE_JOBS[kind](local["id"])  # what the worker does
    result = cli.invoke(append_resource, [str(random_file(4000, name="far.bin")), doomed["id"]])
    assert result.exit_code == 0, result.output
    far = helpers.call_action("package_show", id=doomed["id"])["resources"][-1]
    RESOURCE_JOBS["backup"](far["id"])
    kept = cli.invoke(append_resource, [str(random_file(5000, name="kept.bin")), living["id"]])
    assert kept.exit_code == 0, kept.output
    # a resource of the living dataset deleted, then its row removed by CKAN (a later change
    # of the dataset's resources does that): purged too, without dataset_purge
    result = cli.invoke(append_resource, [str(random_file(6000, name="lost.bin")), living["id"]])
    assert result.exit_code == 0, result.output
    lost = helpers.call_action("package_show", id=living["id"])["resources"][-1]
    lost_object = placement.file_of(store, living["id"], lost["id"]).recorded
    assert anonymous_status(store.object_url(*lost_object)) == 200
    helpers.call_action("resource_delete", context={"user": user["name"]}, id=lost["id"])
    helpers.call_action(
        "resource_create", context={"user": user["name"]}, package_id=living["id"], url="x:"
    )
    assert lost["id"] not in {
        r.id for r in model.Session.query(model.Resource).filter_by(package_id=living["id"])
    }
    model.Session.rollback()
    converge.converge_dataset(living["id"])  # the job the change queued
    assert anonymous_status(store.object_url(*lost_object)) == 403
    (lost_record,) = depot_files.file_records(resource_ids=[lost["id"]])
    assert lost_record.purged is not None

    objects = {
        r["id"]: placement.file_of(store, doomed["id"], r["id"]).recorded for r in (local, far)
    }
    ckan_path = placement.ckan_path(local["id"])
    depot_file = ckan_path.resolve()
    backup = backup_path_for(backups, far["id"])
    assert backup.is_file() and depot_file != ckan_path
    assert {anonymous_status(store.object_url(*o)) for o in objects.values()} == {200}

    sysadmin = factories.Sysadmin()
    helpers.call_action("dataset_purge", context={"user": sysadmin["name"]}, id=doomed["id"])
    converge.converge_dataset(doomed["id"])  # the job the purge queued
    # unreadable at once: private objects, local copies without permissions
    assert {anonymous_status(store.object_url(*o)) for o in objects.values()} == {403}
    objects[lost["id"]] = lost_object
    assert os.stat(depot_file).st_mode & 0o777 == 0
    assert os.stat(backup).st_mode & 0o777 == 0
    assert ckan_path.is_symlink()
    assert {r.resource_id for r in depot_files.file_records(package_ids=[doomed["id"]])} == {
        local["id"],
        far["id"],
    }

    # kept for the retention period (30 days by default)
    early = cli.invoke(dcor_prune_orphaned_objects, [])
    assert early.exit_code == 0, early.output
    assert "0 purged files past 30 days" in early.output
    assert all(store.object_info(*o) for o in objects.values()) and depot_file.exists()

    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.purge_retention_days", "0")
    orphan = object_key("resource", "0123456789abcdef")
    bucket = next(iter(objects.values())).bucket
    store.client.put_object(Bucket=bucket, Key=orphan, Body=b"nobody's")
    dry = cli.invoke(dcor_prune_orphaned_objects, ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    for gone in objects.values():
        assert f"would remove s3://{gone.bucket}/{gone.key}" in dry.output
    assert f"would remove orphan s3://{bucket}/{orphan}" in dry.output
    assert f"would remove {ckan_path}" in dry.output and f"would remove {depot_file}" in dry.output
    assert f"would remove {backup}" in dry.output
    assert "3 purged files past 0 days: 3 objects and 3 local copies would be removed" in (
        dry.output
    )
    assert depot_file.exists() and store.object_info(bucket, orphan)

    result = cli.invoke(dcor_prune_orphaned_objects, [])
    assert result.exit_code == 0, result.output
    assert "3 objects and 3 local copies removed; 1 orphaned objects removed" in result.output
    assert not any(store.object_info(*o) for o in objects.values())
    assert store.object_info(bucket, orphan) is None
    assert not ckan_path.is_symlink() and not depot_file.exists() and not backup.exists()
    assert depot_files.file_records(package_ids=[doomed["id"]]) == []
    assert depot_files.file_records(resource_ids=[lost["id"]]) == []
    # what a resource still records stays
    living_resources = helpers.call_action("package_show", id=living["id"])["resources"]
    (living_resource,) = [r for r in living_resources if r["name"] == "kept.bin"]
    still = placement.file_of(store, living["id"], living_resource["id"]).recorded
    assert anonymous_status(store.object_url(*still)) == 200
