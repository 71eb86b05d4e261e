"""The inspection commands list-all-resources and dcor-list-s3-objects-for-dataset,
against the real services (the fixity audit: ``test_audit.py``)."""

from __future__ import annotations

import os

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import (
    dcor_list_s3_objects_for_dataset,
    dcor_migrate_resources_to_object_store,
    list_all_resources,
)
from ckanext.dcor_depot.jobs import converge, move
from ckanext.dcor_depot.storage.depot import artifact_path
from ckanext.dcor_depot.storage.s3 import object_key

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


@pytest.fixture
def migrated(api_upload, random_file, cli):
    """A public and a private dataset of one circle, their files migrated to S3."""
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    public = factories.Dataset(owner_org=org["id"], user=user, private=False)
    private = factories.Dataset(owner_org=org["id"], user=user, private=True)
    first = api_upload(user, public["id"], random_file(3000, name="a.bin"))
    artifact_path(placement.ckan_path(first["id"]), "condensed").write_bytes(os.urandom(1500))
    second = api_upload(user, private["id"], random_file(4000, name="b.bin"))
    result = cli.invoke(dcor_migrate_resources_to_object_store, [])
    assert result.exit_code == 0, result.output
    return org, public, private, first, second


def test_list_s3_objects_of_a_dataset(migrated, store, cli):
    org, public, private, first, second = migrated
    bucket = store.circle_bucket(org["id"])
    plain = cli.invoke(dcor_list_s3_objects_for_dataset, [public["name"]])
    assert plain.exit_code == 0, plain.output
    lines = plain.output.splitlines()
    assert lines[0] == f"{bucket}:{object_key('resource', first['id'])}  public   2.9 KiB"
    assert lines[1] == f"{bucket}:{object_key('condensed', first['id'])}  public   1.5 KiB"
    assert lines[2] == f"{bucket}:{object_key('preview', first['id'])}  missing  -"
    assert lines[3] == f"Dataset {public['name']}: 2 public, 0 private, 1 missing"
    assert "\x1b[" not in plain.output  # no colour when piped

    coloured = cli.invoke(dcor_list_s3_objects_for_dataset, [private["id"]], color=True)
    assert "\x1b[33mprivate" in coloured.output
    assert "\x1b[31mmissing" in coloured.output

    helpers.call_action("resource_delete", id=second["id"])
    deleted = cli.invoke(dcor_list_s3_objects_for_dataset, [private["id"]])
    assert "(resource deleted)" in deleted.output.splitlines()[0]

    unknown = cli.invoke(dcor_list_s3_objects_for_dataset, ["no-such-dataset"])
    assert unknown.exit_code == 1
    assert "There is no dataset 'no-such-dataset'" in unknown.output


def test_link_resources_have_no_objects_and_a_moved_dataset_lists_its_new_bucket(
    migrated, store, cli
):
    org, public, private, first, second = migrated
    helpers.call_action(
        "resource_create", package_id=public["id"], url="https://example.org/elsewhere.csv"
    )
    other = factories.Organization()
    helpers.call_action("package_patch", id=public["id"], owner_org=other["id"])
    converge.converge_here(store, public["id"])
    pending = cli.invoke(dcor_list_s3_objects_for_dataset, [public["id"]])
    lines = pending.output.splitlines()
    assert len(lines) == 4  # three artifacts of the file, no line of the link
    old_bucket = store.circle_bucket(org["id"])
    assert lines[0].startswith(f"{old_bucket}:{object_key('resource', first['id'])}  public")
    assert lines[0].endswith(f"(to be moved to {store.circle_bucket(other['id'])})")

    move.move_objects(store, public["id"])
    moved = cli.invoke(dcor_list_s3_objects_for_dataset, [public["id"]])
    bucket = store.circle_bucket(other["id"])
    assert moved.output.splitlines()[:2] == [
        f"{bucket}:{object_key('resource', first['id'])}  public   2.9 KiB",
        f"{bucket}:{object_key('condensed', first['id'])}  public   1.5 KiB",
    ]
    assert (
        moved.output.splitlines()[3] == f"Dataset {public['name']}: 2 public, 0 private, 1 missing"
    )


def test_list_all_resources_by_state(cli):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    active = factories.Resource(package_id=factories.Dataset(owner_org=org["id"])["id"])
    draft_dataset = factories.Dataset(owner_org=org["id"], state="draft")
    draft = factories.Resource(package_id=draft_dataset["id"])
    removed = factories.Resource(package_id=active["package_id"])
    helpers.call_action("resource_delete", id=removed["id"])
    in_deleted = factories.Resource(package_id=factories.Dataset(owner_org=org["id"])["id"])
    helpers.call_action("package_delete", id=in_deleted["package_id"])

    def listed(*args):
        result = cli.invoke(list_all_resources, list(args))
        assert result.exit_code == 0, result.output
        return set(result.output.split())

    assert listed() == {active["id"]}
    assert listed("--state", "draft") == {draft["id"]}
    assert listed("--state", "deleted") == {removed["id"], in_deleted["id"]}
    assert listed("--state", "all") == {active["id"], draft["id"], removed["id"], in_deleted["id"]}
    assert cli.invoke(list_all_resources, ["--state", "gone"]).exit_code == 2
