"""``ckan append-resource``: a file goes straight to S3 and into a dataset
(also an active one); bad input is refused with a reason and changes nothing."""

from __future__ import annotations

import os
import uuid

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot.cli import append_resource
from ckanext.dcor_depot.storage.s3 import object_key

from ..conftest import anonymous_status, chosen_before, object_sha256, sha256_path

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

#: The documented recipe of the resource id (README, "append-resource").
NAMESPACE = uuid.UUID("5d5ab1c6-8c4e-4f0d-9a43-7b0a3d7c1e20")


@pytest.fixture
def circle():
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    return user, org


def circle_objects(store, org_id: str) -> list[str]:
    bucket = store.circle_bucket(org_id)
    if bucket not in store.list_buckets():
        return []
    return [o.key for o in store.iter_objects(bucket)]


def test_append_rtdc_to_an_active_public_dataset(circle, rtdc_file, store, cli):
    user, org = circle
    dataset = factories.Dataset(owner_org=org["id"], user=user, private=False, state="active")
    path = rtdc_file(name="M001_data.rtdc", fluorescence=True)
    sha256 = sha256_path(path)

    result = cli.invoke(append_resource, [str(path), dataset["name"]])
    assert result.exit_code == 0, result.output
    resource_id = str(uuid.uuid5(NAMESPACE, f"{dataset['id']}/{sha256}"))
    assert f"as resource {resource_id}" in result.output

    shown = helpers.call_action("resource_show", id=resource_id)
    assert shown["name"] == "M001_data.rtdc"
    assert shown["sha256"] == sha256
    assert shown["size"] == path.stat().st_size
    assert shown["mimetype"] == "application/x-hdf5"
    assert shown["format"] == "RT-FDC"
    assert shown["dc:experiment:sample"] == "test sample"
    assert shown["dc:setup:channel width"] == 20
    bucket = store.circle_bucket(org["id"])
    assert object_sha256(store, bucket, object_key("resource", resource_id)) == sha256
    assert anonymous_status(shown["s3_url"]) == 200
    assert path.is_file()  # kept without --delete-source

    again = cli.invoke(append_resource, [str(path), dataset["id"]])
    assert again.exit_code == 1
    assert f"already in dataset {dataset['name']} as resource {resource_id}" in again.output


def test_append_to_a_private_dataset_and_delete_the_source(circle, random_file, store, cli):
    user, org = circle
    dataset = factories.Dataset(owner_org=org["id"], user=user, private=True)
    path = random_file(7 * 1024**2 + 3, name="raw.bin")  # a multipart upload
    sha256 = sha256_path(path)
    result = cli.invoke(
        append_resource, [str(path), dataset["id"], "--name", "Raw data", "--delete-source"]
    )
    assert result.exit_code == 0, result.output
    assert f"Deleted {path}" in result.output
    assert not path.exists()
    (resource,) = helpers.call_action("package_show", id=dataset["id"])["resources"]
    assert resource["name"] == "Raw data"
    assert resource["sha256"] == sha256
    key = object_key("resource", resource["id"])
    assert object_sha256(store, store.circle_bucket(org["id"]), key) == sha256
    assert anonymous_status(resource["s3_url"]) == 403


def test_a_broken_rtdc_file_only_with_no_dc_check(circle, random_file, store, cli):
    user, org = circle
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    path = random_file(5000, name="broken.rtdc")
    refused = cli.invoke(append_resource, [str(path), dataset["id"]])
    assert refused.exit_code == 1
    assert "is not a valid DC file" in refused.output
    assert "--no-dc-check" in refused.output
    assert circle_objects(store, org["id"]) == []

    accepted = cli.invoke(append_resource, [str(path), dataset["id"], "--no-dc-check"])
    assert accepted.exit_code == 0, accepted.output
    (resource,) = helpers.call_action("package_show", id=dataset["id"])["resources"]
    assert resource["dc_error"].startswith("dclab cannot read this file")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing path", "does not exist"),
        ("directory", "is a directory"),
        ("fifo", "is not a regular file"),
        ("unknown dataset", "There is no dataset 'no-such-dataset'"),
        ("deleted dataset", "is deleted: restore it first"),
        ("unreadable file", "cannot be read: Input/output error"),
        # somebody chose, in a dataset of their own, the id append-resource derives
        ("id taken elsewhere", "is taken by dataset"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    case, message, circle, random_file, store, cli, tmp_path
):
    user, org = circle
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    target = dataset["id"]
    path = random_file(1000, name="good.bin")
    if case == "missing path":
        path = tmp_path / "nothing-here.bin"
    elif case == "directory":
        path = tmp_path
    elif case == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif case == "unknown dataset":
        target = "no-such-dataset"
    elif case == "deleted dataset":
        helpers.call_action("package_delete", id=dataset["id"])
    elif case == "unreadable file":
        # the tests run as root, who reads any mode: a regular file whose read fails
        path = "/proc/self/mem"
    elif case == "id taken elsewhere":
        derived = str(uuid.uuid5(NAMESPACE, f"{dataset['id']}/{sha256_path(path)}"))
        theirs = factories.Dataset(owner_org=org["id"], user=user)
        chosen_before(theirs["id"], derived)
    result = cli.invoke(append_resource, [str(path), target])
    assert result.exit_code == 1
    assert message in result.output
    assert circle_objects(store, org["id"]) == []
    shown = helpers.call_action("package_show", id=dataset["id"])
    assert shown["resources"] == []
