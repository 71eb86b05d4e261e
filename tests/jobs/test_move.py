"""A dataset that changes circle: its objects move to the new circle's bucket,
verified, and a kill at any step leaves every file readable by those who may,
by nobody else, and a rerun finishes the move. Also ``ckan
dcor-move-dataset-to-circle``."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import config, placement
from ckanext.dcor_depot.cli import dcor_move_dataset_to_circle, run_jobs_dcor_depot
from ckanext.dcor_depot.jobs import move
from ckanext.dcor_depot.model import depot_files
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore

from ..conftest import (
    anonymous_status,
    appended,
    derived_ini,
    http,
    kill_tree,
    sha256_path,
    stop_at,
    wait_until_stopped,
    worker_command,
)

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


@pytest.fixture
def circles():
    """A public dataset in circle A; B is where it goes; ``member`` is a member of both."""
    member = factories.User()
    users = [{"name": member["name"], "capacity": "member"}]
    circle_a = factories.Organization(users=users)
    circle_b = factories.Organization(users=users)
    dataset = factories.Dataset(owner_org=circle_a["id"], private=False)
    return member, circle_a, circle_b, dataset


def member_download(app, member: dict, resource: dict) -> str:
    """SHA-256 of a member's download through CKAN (a redirect to S3)."""
    token = factories.APIToken(user=member["name"])["token"]
    url = f"/dataset/{resource['package_id']}/resource/{resource['id']}/download"
    answer = app.get(url, headers={"Authorization": token}, follow_redirects=False)
    assert answer.status_code == 302, answer.status_code
    digest = hashlib.sha256()
    with http.get(answer.headers["Location"], stream=True, timeout=120) as s3:
        assert s3.status_code == 200
        for chunk in s3.iter_content(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def objects_of(store: ObjectStore, org_id: str) -> list[str]:
    bucket = store.circle_bucket(org_id)
    if bucket not in store.list_buckets():
        return []
    return sorted(info.key for info in store.iter_objects(bucket))


def test_worker_killed_in_the_middle_of_a_move_then_a_rerun(
    circles, cli, random_file, store, app, tmp_path, ckan_config, monkeypatch
):
    member, circle_a, circle_b, dataset = circles
    big = random_file(24 * MiB, name="big.bin")
    resource = appended(cli, dataset, big)
    expected = sha256_path(big)
    placed = placement.file_of(store, dataset["id"], resource["id"])
    old = placed.recorded
    assert anonymous_status(store.object_url(*old)) == 200

    helpers.call_action("package_patch", id=dataset["id"], owner_org=circle_b["id"])
    target = store.circle_bucket(circle_b["id"])
    # copied part by part (a long copy), not with one shallow CopyObject; short leases:
    # the rerun waits for the killed holder's lease to expire
    options = {
        "dcor_object_store.copy_object_max_mib": "0",
        "ckanext.dcor_depot.lease_seconds": "2",
    }
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.lease_seconds", "2")
    # the worker stops itself once the first part is copied, and is killed there
    marker = tmp_path / "stopped"
    worker = subprocess.Popen(
        worker_command(str(derived_ini(tmp_path, **options))),
        stderr=subprocess.DEVNULL,
        env=stop_at("s3-part", marker),
    )
    wait_until_stopped(marker, worker, "the first part of the move's copy")
    (upload,) = store.client.list_multipart_uploads(Bucket=target)["Uploads"]
    assert upload["Key"] == old.key
    kill_tree(worker.pid)
    worker.wait()

    # killed mid-copy: the file is where it was recorded, readable as before
    assert placement.file_of(store, dataset["id"], resource["id"]).recorded == old
    assert anonymous_status(store.object_url(*old)) == 200
    assert member_download(app, member, resource) == expected
    assert store.object_info(target, old.key) is None  # the copy never completed

    # a rerun (the sweep of run-jobs-dcor-depot) finishes the move
    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 0, result.output
    assert "moved 1 objects" in result.output
    new = placement.file_of(store, dataset["id"], resource["id"]).recorded
    assert new.bucket == target and new.key == old.key
    assert store.object_info(*old) is None
    assert anonymous_status(store.object_url(*new)) == 200
    assert member_download(app, member, resource) == expected


def stopped_here(*args):
    raise KeyboardInterrupt  # the process dies here


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
def test_killed_after_recording_before_deleting_the_old_copy(
    circles, cli, random_file, store, app, monkeypatch, private
):
    member, circle_a, circle_b, dataset = circles
    helpers.call_action("package_patch", id=dataset["id"], private=private)
    path = random_file(12 * MiB, name="cells.bin")
    resource = appended(cli, dataset, path)
    old = placement.file_of(store, dataset["id"], resource["id"]).recorded
    helpers.call_action("package_patch", id=dataset["id"], owner_org=circle_b["id"])

    monkeypatch.setattr(store, "delete_object", stopped_here)
    with pytest.raises(KeyboardInterrupt):
        move.move_objects(store, dataset["id"])
    monkeypatch.undo()

    placed = placement.file_of(store, dataset["id"], resource["id"])
    assert placed.recorded.bucket == store.circle_bucket(circle_b["id"])
    assert placed.moved_from == old  # still to delete
    readable = 200 if not private else 403
    assert anonymous_status(store.object_url(*placed.recorded)) in (readable, 403)
    assert anonymous_status(store.object_url(*old)) == 403  # nobody reads the old copy
    assert member_download(app, member, resource) == sha256_path(path)

    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 0, result.output
    assert store.object_info(*old) is None
    assert anonymous_status(store.object_url(*placed.recorded)) == readable
    assert depot_files.file_records(resource_ids=[resource["id"]])[0].moved_from is None


def test_move_dataset_to_circle_copies_verifies_and_switches(circles, cli, random_file, store, app):
    member, circle_a, circle_b, dataset = circles
    files = [random_file(size, name=f"f{size}.bin") for size in (3000, 7 * MiB)]
    resources = [appended(cli, dataset, path) for path in files]

    result = cli.invoke(
        dcor_move_dataset_to_circle, [dataset["name"], circle_b["name"], "--verify-checksum"]
    )
    assert result.exit_code == 0, result.output
    assert f"Moving dataset {dataset['name']} (2 objects" in result.output
    assert (
        f"moved from circle {circle_a['name']} to {circle_b['name']}: 2 objects copied and "
        "verified, 0 were already there"
    ) in result.output
    assert "2 old copies deleted" in result.output
    assert helpers.call_action("package_show", id=dataset["id"])["owner_org"] == circle_b["id"]
    assert objects_of(store, circle_a["id"]) == []
    for resource, path in zip(resources, files, strict=True):
        placed = placement.file_of(store, dataset["id"], resource["id"])
        assert placed.recorded.bucket == store.circle_bucket(circle_b["id"])
        assert anonymous_status(store.object_url(*placed.recorded)) == 200
        assert member_download(app, member, resource) == sha256_path(path)

    again = cli.invoke(dcor_move_dataset_to_circle, [dataset["name"], circle_b["name"]])
    assert again.exit_code == 1
    assert f"already in circle {circle_b['name']}" in again.output


def test_a_dataset_whose_files_cannot_be_verified_in_the_target_is_not_moved(
    circles, cli, random_file, store
):
    member, circle_a, circle_b, dataset = circles
    good = appended(cli, dataset, random_file(3000, name="good.bin"))
    bad = appended(cli, dataset, random_file(4000, name="bad.bin"))
    location = placement.file_of(store, dataset["id"], bad["id"]).recorded
    info = store.object_info(*location)
    # the stored bytes rot behind the record's back (same size, same metadata)
    store.client.put_object(
        Bucket=location.bucket, Key=location.key, Body=b"x" * 4000, Metadata=info.metadata
    )

    result = cli.invoke(dcor_move_dataset_to_circle, [dataset["id"], circle_b["id"]])
    assert result.exit_code == 1
    assert f"Dataset {dataset['name']} was not moved" in result.output
    assert f"resource {bad['id']}" in result.output and "failed verification" in result.output
    assert helpers.call_action("package_show", id=dataset["id"])["owner_org"] == circle_a["id"]
    assert objects_of(store, circle_b["id"]) == []  # the copies made were removed
    assert placement.file_of(store, dataset["id"], good["id"]).recorded.bucket == (
        store.circle_bucket(circle_a["id"])
    )

    unknown = cli.invoke(dcor_move_dataset_to_circle, [dataset["id"], "no-such-circle"])
    assert unknown.exit_code == 1
    assert "There is no active circle (organization) 'no-such-circle'" in unknown.output
    assert config.object_store() is store


def test_an_old_copy_left_by_a_move_is_never_readable_by_anonymous_once_the_dataset_is_private(
    circles, cli, random_file, store
):
    """A move recorded the new copy and was stopped before it deleted the old one, and
    the new copy is then lost: the old one stays (the only copy of the bytes). The dataset
    turns private: its convergence tags the old copy private as well, and says what is
    wrong with the new one."""
    member, circle_a, circle_b, dataset = circles
    resource = appended(cli, dataset, random_file(1000, name="cells.bin"))
    old = placement.file_of(store, dataset["id"], resource["id"]).recorded
    assert anonymous_status(store.object_url(*old)) == 200
    helpers.call_action("package_patch", id=dataset["id"], owner_org=circle_b["id"])
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(store, "delete_object", stopped_here)
        move.move_objects(store, dataset["id"])
    placed = placement.file_of(store, dataset["id"], resource["id"])
    assert placed.moved_from == old
    store.delete_object(*placed.recorded)  # the new copy is lost

    helpers.call_action("package_patch", id=dataset["id"], private=True)
    result = cli.invoke(run_jobs_dcor_depot, [])
    assert store.object_info(*old) is not None  # kept: the new copy is not there
    assert anonymous_status(store.object_url(*old)) == 403
    assert result.exit_code == 1, result.output
    assert resource["id"] in result.output and "missing" in result.output, result.output
