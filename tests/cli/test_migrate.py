"""``ckan dcor-migrate-resources-to-object-store`` against the real services:
files on block storage (CKAN's path, the depot behind a symlink, artifacts
beside them) end up in the circle buckets, verified, recorded, private when
the dataset is, and local files go only once their objects are proven."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import config, locks, placement
from ckanext.dcor_depot.cli import dcor_migrate_resources_to_object_store as migrate
from ckanext.dcor_depot.cli import dcor_prune_stale_multipart_uploads as prune
from ckanext.dcor_depot.cli.migrate import run_lock
from ckanext.dcor_depot.jobs.resource_jobs import RESOURCE_JOBS
from ckanext.dcor_depot.leases import connection
from ckanext.dcor_depot.operations.migrate import Options, migrate_resource, record
from ckanext.dcor_depot.operations.status import candidates
from ckanext.dcor_depot.storage.depot import artifact_path
from ckanext.dcor_depot.storage.s3 import MiB, object_key

from ..conftest import (
    CKAN,
    anonymous_status,
    derived_ini,
    make_old,
    object_sha256,
    sha256_path,
    stop_at,
    wait_until_stopped,
)

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


@pytest.fixture
def circle():
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    return user, org


@pytest.fixture
def on_block_storage(circle, api_upload, random_file):
    """Factory: a resource whose file lies on block storage only (no job has run)."""
    user, org = circle
    datasets = {}

    def make(size=3000, name="data.bin", private=False, dataset=None, artifacts=()):
        if dataset is None:
            key = "private" if private else "public"
            if key not in datasets:
                datasets[key] = factories.Dataset(owner_org=org["id"], private=private, user=user)
            dataset = datasets[key]
        resource = api_upload(user, dataset["id"], random_file(size, name=name))
        path = placement.ckan_path(resource["id"])
        for artifact in artifacts:
            artifact_path(path, artifact).write_bytes(os.urandom(2000))
        return resource

    return make


def bucket_of(store, resource) -> str:
    package = helpers.call_action("package_show", id=resource["package_id"])
    return store.circle_bucket(package["owner_org"])


def last_modified(store, bucket, key):
    return store.client.head_object(Bucket=bucket, Key=key)["LastModified"]


def test_migration_uploads_verifies_records_and_keeps_private_data_private(
    on_block_storage, store, cli
):
    public = on_block_storage(name="public.bin", artifacts=("condensed", "preview"))
    private = on_block_storage(size=6 * MiB + 1, name="private.bin", private=True)  # multipart

    result = cli.invoke(migrate, [])
    assert result.exit_code == 0, result.output
    assert "2 resources: 4 objects uploaded" in result.output
    assert "0 missing, 0 failed" in result.output

    for resource, artifacts, anonymous in (
        (public, ("resource", "condensed", "preview"), 200),
        (private, ("resource",), 403),
    ):
        bucket = bucket_of(store, resource)
        path = placement.ckan_path(resource["id"])
        shown = helpers.call_action("resource_show", id=resource["id"])
        for artifact in artifacts:
            key = object_key(artifact, resource["id"])
            local = sha256_path(artifact_path(path, artifact))
            assert object_sha256(store, bucket, key) == local
            assert anonymous_status(store.object_url(bucket, key)) == anonymous
            if artifact != "resource":
                assert shown[f"s3_{artifact}_sha256"] == local
        assert shown["sha256"] == sha256_path(path)
        assert shown["size"] == path.stat().st_size
        assert shown["s3_available"] is True
        assert shown["s3_url"] == store.object_url(bucket, object_key("resource", resource["id"]))
        assert path.is_file()  # nothing deleted without --delete-after-migration

    key = object_key("resource", private["id"])
    before = last_modified(store, bucket_of(store, private), key)
    again = cli.invoke(migrate, [])
    assert again.exit_code == 0, again.output
    assert "2 resources: 0 objects uploaded" in again.output
    assert "4 already in S3" in again.output
    assert last_modified(store, bucket_of(store, private), key) == before


def test_dry_run_changes_nothing(on_block_storage, store, cli):
    resource = on_block_storage(artifacts=("preview",))
    result = cli.invoke(migrate, ["--dry-run", "--delete-after-migration"])
    assert result.exit_code == 0, result.output
    assert "would upload resource; would upload preview" in result.output
    assert "Dry run, nothing changed. 1 resources: 2 objects would be uploaded" in result.output
    assert (
        store.object_info(bucket_of(store, resource), object_key("resource", resource["id"]))
        is None
    )
    assert "s3_available" not in helpers.call_action("resource_show", id=resource["id"])
    assert placement.ckan_path(resource["id"]).is_file()


def test_parallel_jobs_migrate_every_resource(circle, on_block_storage, store, cli):
    user, org = circle
    datasets = [factories.Dataset(owner_org=org["id"], user=user) for _ in range(3)]
    resources = [
        on_block_storage(size=1000 + i, name=f"f{i}.bin", dataset=datasets[i % 3]) for i in range(9)
    ]
    result = cli.invoke(migrate, ["--jobs", "4"])
    assert result.exit_code == 0, result.output
    assert "9 resources: 9 objects uploaded" in result.output
    for resource in resources:
        shown = helpers.call_action("resource_show", id=resource["id"])
        key = object_key("resource", resource["id"])
        assert object_sha256(store, bucket_of(store, resource), key) == shown["sha256"]
        assert shown["sha256"] == sha256_path(placement.ckan_path(resource["id"]))


def test_missing_file_is_reported_counted_and_the_rest_migrated(on_block_storage, store, cli):
    lost = on_block_storage(name="lost.bin")
    kept = on_block_storage(name="kept.bin")
    placement.ckan_path(lost["id"]).unlink()
    result = cli.invoke(migrate, [])
    assert result.exit_code == 1
    assert "2 resources: 1 objects uploaded" in result.output
    assert "1 missing, 0 failed" in result.output
    assert f"FAILED resource {lost['id']}" in result.output
    assert "the file is missing at" in result.output
    assert helpers.call_action("resource_show", id=kept["id"])["s3_available"] is True


def test_deleted_datasets_and_old_resources_are_skipped(circle, on_block_storage, store, cli):
    user, org = circle
    old = on_block_storage(name="old.bin")
    other = factories.Dataset(owner_org=org["id"], user=user)
    gone = on_block_storage(name="gone.bin", dataset=other)
    helpers.call_action("package_delete", id=other["id"])
    make_old(old)

    recent = cli.invoke(migrate, ["--modified-days", "30"])
    assert recent.exit_code == 0, recent.output
    assert "0 resources" in recent.output
    everything = cli.invoke(migrate, [])
    assert everything.exit_code == 0, everything.output
    assert "1 resources: 1 objects uploaded" in everything.output
    assert store.object_info(bucket_of(store, gone), object_key("resource", gone["id"])) is None


def test_object_corrupted_behind_the_tools_back(on_block_storage, store, cli):
    resource = on_block_storage(size=4000, artifacts=("condensed",))
    RESOURCE_JOBS["symlink"](resource["id"])  # CKAN's path now links into the depot
    path = placement.ckan_path(resource["id"])
    depot_file = path.resolve()
    assert path.is_symlink()
    assert cli.invoke(migrate, []).exit_code == 0
    bucket, key = bucket_of(store, resource), object_key("resource", resource["id"])
    original = sha256_path(path)
    # same size, other bytes, the metadata still claiming the original SHA-256
    store.client.put_object(
        Bucket=bucket, Key=key, Body=os.urandom(4000), Metadata={"sha256": original}
    )

    keep = cli.invoke(migrate, ["--delete-after-migration"])
    assert keep.exit_code == 1
    assert f"kept {path}" in keep.output
    assert "1 local files deleted" in keep.output  # only the condensed file
    assert path.is_symlink() and depot_file.is_file()
    assert not artifact_path(path, "condensed").exists()

    existence = cli.invoke(migrate, ["--verify-existence"])
    assert existence.exit_code == 0, existence.output  # the metadata cannot tell
    assert "0 uploaded again" in existence.output

    checksum = cli.invoke(migrate, ["--verify-checksum"])
    assert checksum.exit_code == 0, checksum.output
    assert "1 uploaded again after a failed check" in checksum.output
    assert "the object's bytes have SHA-256" in checksum.output
    assert object_sha256(store, bucket, key) == original

    delete = cli.invoke(migrate, ["--delete-after-migration"])
    assert delete.exit_code == 0, delete.output
    assert "1 local files deleted" in delete.output
    assert not path.exists() and not path.is_symlink()
    assert not depot_file.exists()
    assert object_sha256(store, bucket, key) == original
    assert helpers.call_action("resource_show", id=resource["id"])["sha256"] == original

    later = cli.invoke(migrate, ["--verify-checksum"])
    assert later.exit_code == 0, later.output
    assert "2 already in S3" in later.output


def test_verify_existence_uploads_a_lost_object_again_or_says_it_cannot(
    on_block_storage, store, cli
):
    resource = on_block_storage()
    assert cli.invoke(migrate, []).exit_code == 0
    bucket, key = bucket_of(store, resource), object_key("resource", resource["id"])
    store.delete_object(bucket, key)
    plain = cli.invoke(migrate, [])
    assert "1 already in S3" in plain.output  # without a check the record is trusted

    repaired = cli.invoke(migrate, ["--verify-existence"])
    assert repaired.exit_code == 0, repaired.output
    assert "1 uploaded again after a failed check" in repaired.output
    assert object_sha256(store, bucket, key) == sha256_path(placement.ckan_path(resource["id"]))

    assert cli.invoke(migrate, ["--delete-after-migration"]).exit_code == 0
    store.delete_object(bucket, key)
    lost = cli.invoke(migrate, ["--verify-existence"])
    assert lost.exit_code == 1
    assert "the object is missing, and there is no local file to upload" in lost.output


def test_killed_migration_resumes_without_uploading_again(
    circle, on_block_storage, store, cli, tmp_path, ckan_config, monkeypatch
):
    user, org = circle
    dataset = factories.Dataset(owner_org=org["id"], user=user, private=True)
    first = on_block_storage(name="first.bin", dataset=dataset)
    big = on_block_storage(name="big.bin", dataset=dataset)
    last = on_block_storage(name="last.bin", dataset=dataset)
    with open(placement.ckan_path(big["id"]), "wb") as fd:  # several parts
        fd.write(os.urandom(24 * MiB))
    bucket = store.circle_bucket(org["id"])
    big_key = object_key("resource", big["id"])

    # the command stops itself once the store holds a part of big.bin, and is killed there;
    # short leases: the next run waits for the killed run's lease of big.bin to expire
    marker = tmp_path / "stopped"
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.lease_seconds", "2")
    ini = str(derived_ini(tmp_path, **{"ckanext.dcor_depot.lease_seconds": "2"}))
    proc = subprocess.Popen(
        [CKAN, "-c", ini, "dcor-migrate-resources-to-object-store", "--jobs", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=stop_at("s3-part", marker),
    )
    try:
        wait_until_stopped(marker, proc, "the first part of big.bin")
        assert _uploads_in_progress(store, bucket, big_key)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)

    # the killed run's lease of the command would expire within its period of 10 s
    # (tests/test_locks.py): as if it had
    assert connection().delete(run_lock().key) == 1
    first_key = object_key("resource", first["id"])
    uploaded_before = last_modified(store, bucket, first_key)  # uploaded, not yet recorded
    assert "s3_available" not in helpers.call_action("resource_show", id=first["id"])
    local = {r["id"]: sha256_path(placement.ckan_path(r["id"])) for r in (first, big, last)}
    # run again, deleting in the same run what it uploads or finds unrecorded
    result = cli.invoke(migrate, ["--delete-after-migration", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "3 resources: 2 objects uploaded" in result.output
    assert "resource was already in S3, verified" in result.output
    assert "1 already in S3, 3 local files deleted" in result.output
    assert last_modified(store, bucket, first_key) == uploaded_before
    for resource in (first, big, last):
        shown = helpers.call_action("resource_show", id=resource["id"])
        assert shown["sha256"] == local[resource["id"]]
        key = object_key("resource", resource["id"])
        assert object_sha256(store, bucket, key) == shown["sha256"]
        assert anonymous_status(shown["s3_url"]) == 403
        assert not placement.ckan_path(resource["id"]).exists()

    # the killed upload's parts stay until pruned
    assert _uploads_in_progress(store, bucket, big_key)
    kept = cli.invoke(prune, [])
    assert kept.exit_code == 0, kept.output
    assert "0 multipart uploads started before" in kept.output
    dry = cli.invoke(prune, ["--initiated-before-days", "0", "--dry-run"])
    assert f"would abort {bucket}:{big_key}" in dry.output
    assert _uploads_in_progress(store, bucket, big_key)
    pruned = cli.invoke(prune, ["--initiated-before-days", "0"])
    assert pruned.exit_code == 0, pruned.output
    assert f"aborted {bucket}:{big_key}" in pruned.output
    assert "1 multipart uploads started before" in pruned.output
    assert not _uploads_in_progress(store, bucket, big_key)


def _uploads_in_progress(store, bucket: str, key: str) -> bool:
    try:
        uploads = store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except store.client.exceptions.NoSuchBucket:
        return False
    return any(u["Key"] == key for u in uploads)


def test_without_object_store_the_command_says_what_to_set(cli, ckan_config, monkeypatch):
    monkeypatch.setitem(ckan_config, "dcor_object_store.endpoint_url", "")
    result = cli.invoke(migrate, [])
    assert result.exit_code == 1
    assert "set dcor_object_store.endpoint_url" in result.output


def test_symlinked_file_outside_the_depots_is_kept(on_block_storage, store, cli, tmp_path):
    resource = on_block_storage()
    path = placement.ckan_path(resource["id"])
    elsewhere = tmp_path / "elsewhere.bin"
    path.rename(elsewhere)
    Path(path).symlink_to(elsewhere)
    result = cli.invoke(migrate, ["--delete-after-migration"])
    assert result.exit_code == 1
    assert "outside the depots" in result.output
    assert elsewhere.is_file() and path.is_symlink()


def test_a_second_run_is_refused_while_one_runs(on_block_storage, cli, monkeypatch):
    monkeypatch.setattr(locks, "COMMAND_LEASE_SECONDS", 0.5)  # a shorter wait for the refusal
    on_block_storage()
    with run_lock():
        refused = cli.invoke(migrate, [])
        assert refused.exit_code == 1
        assert "Another dcor-migrate-resources-to-object-store is running" in refused.output
        dry = cli.invoke(migrate, ["--dry-run"])
        assert dry.exit_code == 0, dry.output
    assert cli.invoke(migrate, []).exit_code == 0


def test_visibility_changed_during_the_upload_is_applied_when_recording(
    on_block_storage, store, tmp_path
):
    resource = on_block_storage(name="public.bin")
    (candidate,) = candidates(store)
    assert not helpers.call_action("package_show", id=candidate.package_id)["private"]
    options = Options(delete_after_migration=True)
    outcome = migrate_resource(candidate, placement.ckan_path(resource["id"]), store, options)
    url = outcome.fields["s3_url"]
    assert anonymous_status(url) == 403  # private until it is recorded
    helpers.call_action("package_patch", id=resource["package_id"], private=True)
    (recorded,) = record(resource["package_id"], [outcome], store, config.depots_path(), options)
    assert recorded.errors == []
    assert anonymous_status(url) == 403
    assert not placement.ckan_path(resource["id"]).exists()
