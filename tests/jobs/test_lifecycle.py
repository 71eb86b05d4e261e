"""The resource lifecycle with real RQ workers: upload through the API, run
``ckan jobs worker --burst`` in a separate process, then check what a user
and an operator would see: the depot file, CKAN's symlink, the S3 object's
bytes, the resource's fields and anonymous access."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ckan.lib.jobs import get_queue
from ckan.lib.redis import connect_to_redis
from ckan.tests import factories, helpers
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from ckanext.dcor_depot import config, errors, placement
from ckanext.dcor_depot.jobs import converge, queue, resource_jobs
from ckanext.dcor_depot.storage.s3 import MiB, object_key

from ..conftest import (
    CKAN,
    TEST_INI,
    anonymous_status,
    derived_ini,
    kill_tree,
    object_sha256,
    sha256_hex,
    sha256_path,
    stop_at,
    wait_until_stopped,
    worker_command,
)

pytestmark = pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index", "clean_queues")


@pytest.fixture
def circle():
    """A user, the circle (organization) they administer and a private dataset of theirs."""
    user = factories.User(name="alice")
    org = factories.Organization(name="hl60-lab", users=[{"name": "alice", "capacity": "admin"}])
    dataset = factories.Dataset(
        name="hl60-deformability", owner_org=org["id"], private=True, user=user
    )
    return user, org, dataset


def set_visibility(dataset_id: str, **fields) -> None:
    helpers.call_action("package_patch", id=dataset_id, **fields)


@pytest.mark.usefixtures("clean_circles")
def test_upload_reaches_depot_and_s3_and_follows_visibility(
    circle, api_upload, run_worker, rtdc_file, store
):
    user, org, dataset = circle
    path = rtdc_file(events=5000, name="cells.rtdc")
    expected = sha256_path(path)
    resource = api_upload(user, dataset["id"], path)
    rid = resource["id"]

    run_worker()

    # depot file with a human-readable path, CKAN's path a symlink to it
    ckan_path = placement.ckan_path(rid)
    depot_file = (
        config.depots_path()
        / config.users_depot_name()
        / "alice-hl60-lab"
        / dataset["id"][:2]
        / dataset["id"][2:4]
        / f"hl60-deformability_{rid}_cells.rtdc"
    )
    assert ckan_path.is_symlink()
    assert Path(os.readlink(ckan_path)) == depot_file
    assert sha256_path(depot_file) == expected
    # the object in the circle bucket holds the same bytes
    bucket = store.circle_bucket(org["id"])
    body = store.client.get_object(Bucket=bucket, Key=object_key("resource", rid))["Body"].read()
    assert sha256_hex(body) == expected
    # the resource says so, and carries the DC metadata
    shown = helpers.call_action("resource_show", id=rid)
    assert shown["sha256"] == expected
    assert shown["size"] == path.stat().st_size
    assert shown["s3_available"] is True
    assert (
        shown["s3_url"] == f"{store.settings.endpoint_url}/{bucket}/{object_key('resource', rid)}"
    )
    assert shown["etag"] == store.object_info(bucket, object_key("resource", rid)).etag
    assert shown["format"] == "RT-DC"
    assert shown["dc:experiment:sample"] == "test sample"
    assert shown["dc:setup:channel width"] == 20
    assert "dc_error" not in shown
    # CKAN still serves the file through the symlink
    download = helpers._get_test_app().get(shown["url"], headers=_auth(user))
    assert download.status_code == 200
    assert sha256_hex(download.get_data()) == expected

    # private dataset: refused; public: allowed; private again: refused
    assert anonymous_status(shown["s3_url"]) == 403
    set_visibility(dataset["id"], private=False)
    run_worker()
    assert anonymous_status(shown["s3_url"]) == 200
    set_visibility(dataset["id"], private=True)
    run_worker()
    assert anonymous_status(shown["s3_url"]) == 403
    assert_jobs_finished(rid, "file")
    assert not converge.pending(dataset["id"])  # every announced change was converged
    # the jobs' own resource patches queued nothing new
    for name in queue.QUEUES:
        assert get_queue(name).count == 0
        assert not [j for j in get_queue(name).deferred_job_registry.get_job_ids() if rid in j]


def assert_jobs_finished(object_id: str, *kinds: str) -> None:
    for kind in kinds:
        job = Job.fetch(queue.job_id(kind, object_id), connection=connect_to_redis())
        assert job.get_status() == JobStatus.FINISHED, (kind, job.get_status())


def _auth(user: dict) -> dict:
    return {"Authorization": factories.APIToken(user=user["name"])["token"]}


@pytest.mark.usefixtures("clean_circles")
def test_jobs_of_a_resource_are_queued_once_and_two_workers_are_harmless(
    circle, api_upload, random_file, store
):
    user, org, dataset = circle
    path = random_file(300 * 1024**2, name="data.rtdc")
    resource = api_upload(user, dataset["id"], path)
    # the hook queued the jobs; queueing them again adds nothing
    resource_jobs.enqueue_resource_jobs(resource)
    resource_jobs.enqueue_resource_jobs(resource)
    rid = resource["id"]
    # one job runs the file's steps (symlink, S3 upload, DC metadata) in one work horse
    assert get_queue(queue.NORMAL).job_ids == [queue.job_id("file", rid)]
    assert get_queue(queue.SHORT).count == 0

    # two workers (the depot's and CKAN's own) and an operator's run-jobs-dcor-depot at once
    catch_up = [CKAN, "-c", TEST_INI, "run-jobs-dcor-depot"]
    procs = [
        subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
        for cmd in (worker_command(), worker_command(ckan_own=True), catch_up)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]

    ckan_path = placement.ckan_path(resource["id"])
    assert ckan_path.is_symlink()
    assert sha256_path(ckan_path) == sha256_path(path)
    assert [p.name for p in ckan_path.resolve().parent.iterdir()] == [ckan_path.resolve().name]
    shown = helpers.call_action("resource_show", id=resource["id"])
    assert shown["sha256"] == sha256_path(path)
    # random bytes are no DC file: reported on the resource, the storage jobs ran anyway
    assert shown["dc_error"].startswith("dclab cannot read this file")
    assert shown["s3_available"] is True
    assert_jobs_finished(rid, "file")


@pytest.mark.usefixtures("clean_circles")
def test_a_failed_step_does_not_stop_the_next_ones_and_the_job_names_it(
    circle, api_upload, rtdc_file, run_worker, cli, store
):
    """The depot already holds other bytes under the file's name: the symlink
    step fails (nothing is overwritten), the S3 upload and the DC metadata after
    it are done, and the job fails saying which step and why."""
    user, org, dataset = circle
    path = rtdc_file(events=300, name="cells.rtdc")
    resource = api_upload(user, dataset["id"], path)
    rid = resource["id"]
    user_folder = config.depots_path() / config.users_depot_name() / "alice-hl60-lab"
    name = f"hl60-deformability_{rid}_cells.rtdc"
    taken = user_folder / dataset["id"][:2] / dataset["id"][2:4] / name
    taken.parent.mkdir(parents=True, exist_ok=True)
    taken.write_bytes(b"the bytes first published")
    (failure,) = run_worker(failures_allowed=True)
    assert failure.startswith(f"{queue.job_id('file', rid)}:")
    job = Job.fetch(queue.job_id("file", rid), connection=connect_to_redis())
    assert job.get_status() == JobStatus.FAILED
    error = job.latest_result().exc_string
    assert "symlink failed:" in error and "never overwritten" in error
    assert "s3-upload failed" not in error and "dc-metadata failed" not in error
    assert taken.read_bytes() == b"the bytes first published"
    ckan_path = placement.ckan_path(rid)
    assert not ckan_path.is_symlink() and sha256_path(ckan_path) == sha256_path(path)
    shown = helpers.call_action("resource_show", id=rid)
    assert shown["s3_available"] is True and shown["sha256"] == sha256_path(path)
    assert shown["format"] == "RT-DC" and "dc:experiment:event count" in shown
    # the operator's catch-up names the same step and the same reason, and exits 1
    result = cli.invoke(_run_jobs_command(), [])
    assert result.exit_code == 1
    assert f"resource {rid}" in result.output and "symlink failed:" in result.output


def test_a_timed_out_step_ends_the_job_at_once(monkeypatch):
    """RQ stops a job that runs too long by raising JobTimeoutException in it:
    the file job must not swallow it and go on with the next step."""
    ran = []

    def too_long(resource_id):
        raise JobTimeoutException("Task exceeded maximum timeout value (10 seconds)")

    monkeypatch.setitem(resource_jobs.RESOURCE_JOBS, "symlink", too_long)
    monkeypatch.setitem(resource_jobs.RESOURCE_JOBS, "s3-upload", lambda rid: ran.append(rid))
    with pytest.raises(JobTimeoutException):
        resource_jobs.run_steps("some-resource", ["symlink", "s3-upload"])
    assert ran == []


def test_a_database_error_in_one_step_does_not_fail_the_next_ones(monkeypatch):
    """A step whose SQL failed leaves PostgreSQL's transaction aborted: the next
    step of the same job must still read the database."""
    import ckan.model as model
    import sqlalchemy as sa

    read = []

    def broken(resource_id):
        model.Session.execute(sa.text("SELECT 1 / 0"))

    def reads(resource_id):
        read.append(model.Session.execute(sa.text("SELECT 42")).scalar())
        return "read"

    monkeypatch.setitem(resource_jobs.RESOURCE_JOBS, "symlink", broken)
    monkeypatch.setitem(resource_jobs.RESOURCE_JOBS, "s3-upload", reads)
    with pytest.raises(errors.JobError) as error:
        resource_jobs.run_steps("some-resource", ["symlink", "s3-upload"])
    assert read == [42]
    assert "symlink failed" in str(error.value) and "s3-upload failed" not in str(error.value)


@pytest.mark.usefixtures("clean_circles")
def test_resource_name_cannot_leave_the_depot(circle, api_upload, random_file, run_worker):
    user, org, dataset = circle
    resource = api_upload(user, dataset["id"], random_file(1000), name="../../x")
    unnamed = api_upload(user, dataset["id"], random_file(1000, name="raw.bin"), name="")
    run_worker()
    target = placement.ckan_path(resource["id"]).resolve()
    user_folder = config.depots_path() / config.users_depot_name() / "alice-hl60-lab"
    assert target.parent == user_folder / dataset["id"][:2] / dataset["id"][2:4]
    assert target.name == f"hl60-deformability_{resource['id']}__.._x"
    # a resource without a name is named after its file
    assert placement.ckan_path(unnamed["id"]).resolve() == (
        target.parent / f"hl60-deformability_{unnamed['id']}_raw.bin"
    )


@pytest.mark.usefixtures("clean_circles")
def test_draft_dataset_stays_private_until_it_is_active(api_upload, random_file, run_worker):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    dataset = factories.Dataset(owner_org=org["id"], private=False, state="draft", user=user)
    resource = api_upload(user, dataset["id"], random_file(3000))
    run_worker()
    shown = helpers.call_action("resource_show", id=resource["id"])
    assert shown["s3_available"] is True
    assert anonymous_status(shown["s3_url"]) == 403
    set_visibility(dataset["id"], state="active")
    run_worker()
    assert anonymous_status(shown["s3_url"]) == 200
    helpers.call_action("package_delete", id=dataset["id"])
    run_worker()
    assert anonymous_status(shown["s3_url"]) == 403


@pytest.mark.usefixtures("clean_circles")
def test_worker_killed_during_a_copy_to_another_filesystem(
    circle, api_upload, random_file, tmp_path, ckan_config, monkeypatch, cli, request
):
    """The depot on /dev/shm (tmpfs): the symlink job copies. Killed mid-copy,
    CKAN's path still holds the complete file; run-jobs-dcor-depot finishes."""
    depots = Path("/dev/shm") / f"dcor-depot-test-{os.getpid()}" / "depots"
    request.addfinalizer(lambda: shutil.rmtree(depots.parent, ignore_errors=True))
    storage = placement.ckan_path("0" * 36).parents[3]
    assert os.stat("/dev/shm").st_dev != os.stat(storage).st_dev
    # short leases: the catch-up waits for the killed holder's lease to expire
    options = {
        "ckanext.dcor_depot.depots_path": str(depots),
        "ckanext.dcor_depot.lease_seconds": "2",
    }
    ini = derived_ini(tmp_path, **options)
    for key, value in options.items():
        monkeypatch.setitem(ckan_config, key, value)
    user, org, dataset = circle
    resource = api_upload(user, dataset["id"], random_file(1000, name="small.bin"))
    # the upload route is not what is tested here: put a file of several chunks at CKAN's path
    big = random_file(24 * MiB, name="big.bin")
    expected = sha256_path(big)
    ckan_path = placement.ckan_path(resource["id"])
    os.replace(big, ckan_path)

    # the worker stops itself after its first write into the depot's part file: killed there
    marker = tmp_path / "stopped"
    worker = subprocess.Popen(
        worker_command(str(ini)),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=stop_at("part-file", marker),
    )
    wait_until_stopped(marker, worker, "the symlink job's copy")
    (part,) = depots.rglob(".*.part")
    assert 0 < part.stat().st_size < 24 * MiB  # killed in the middle of the copy
    kill_tree(worker.pid)
    worker.wait()

    assert not ckan_path.is_symlink()
    assert sha256_path(ckan_path) == expected

    result = cli.invoke(_run_jobs_command(), [])
    assert result.exit_code == 0, result.output
    assert "ran symlink, s3-upload" in result.output
    assert ckan_path.is_symlink()
    assert Path(os.readlink(ckan_path)).is_relative_to(depots)
    assert sha256_path(ckan_path) == expected
    assert not list(depots.rglob(".*.part"))
    shown = helpers.call_action("resource_show", id=resource["id"])
    assert shown["sha256"] == expected


def _run_jobs_command():
    from ckanext.dcor_depot.cli.run_jobs import run_jobs_dcor_depot

    return run_jobs_dcor_depot


@pytest.mark.usefixtures("clean_circles")
def test_every_way_of_changing_visibility_reaches_the_objects(api_upload, random_file, run_worker):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    dataset = factories.Dataset(owner_org=org["id"], private=False, user=user)
    kept = api_upload(user, dataset["id"], random_file(1000, name="kept.bin"))
    dropped = api_upload(user, dataset["id"], random_file(1000, name="dropped.bin"))
    run_worker()
    kept_url, dropped_url = (
        helpers.call_action("resource_show", id=r["id"])["s3_url"] for r in (kept, dropped)
    )
    assert anonymous_status(kept_url) == anonymous_status(dropped_url) == 200

    # deleting a resource makes its object private, the others stay public
    helpers.call_action("resource_delete", id=dropped["id"])
    run_worker()
    assert (anonymous_status(kept_url), anonymous_status(dropped_url)) == (200, 403)

    # an update that does not send the resources (as the dataset edit form does)
    shown = helpers.call_action("package_show", id=dataset["id"])
    shown.pop("resources")
    # (CKAN 2.11's form keeps the resources with allow_partial_update)
    helpers.call_action(
        "package_update", context={"allow_partial_update": True}, **dict(shown, private=True)
    )
    assert helpers.call_action("resource_show", id=kept["id"])["state"] == "active"
    run_worker()
    assert anonymous_status(kept_url) == 403

    # the organization's bulk actions (CKAN 2.11 runs them as plain SQL)
    helpers.call_action("bulk_update_public", datasets=[dataset["id"]], org_id=org["id"])
    run_worker()
    assert anonymous_status(kept_url) == 200
    helpers.call_action("bulk_update_private", datasets=[dataset["id"]], org_id=org["id"])
    run_worker()
    assert anonymous_status(kept_url) == 403


def test_the_file_of_a_resource_cannot_be_replaced(circle, api_upload, random_file, app):
    user, org, dataset = circle
    resource = api_upload(user, dataset["id"], random_file(1000, name="first.bin"))
    with open(random_file(2000, name="second.bin"), "rb") as fd:
        response = app.post(
            "/api/action/resource_update",
            data={"id": resource["id"], "upload": (fd, "second.bin")},
            headers=_auth(user),
            content_type="multipart/form-data",
        )
    assert response.status_code == 409
    assert "add a new resource" in response.json["error"]["upload"][0]
    assert placement.ckan_path(resource["id"]).stat().st_size == 1000


@pytest.mark.usefixtures("clean_circles")
def test_a_circle_bucket_removed_behind_the_extension_s_back_is_made_again(
    circle, api_upload, run_worker, random_file, store
):
    """The workers take a bucket one of them made ready as ready for a while (each job is
    a new work horse): an upload into a bucket removed meanwhile makes it again, with the
    extension's policy, instead of failing."""
    user, org, dataset = circle
    first = api_upload(user, dataset["id"], random_file(1000, name="first.bin"))
    run_worker()
    bucket = store.circle_bucket(org["id"])
    assert store.object_info(bucket, object_key("resource", first["id"])) is not None
    for obj in list(store.iter_objects(bucket)):
        store.delete_object(bucket, obj.key)
    store.client.delete_bucket(Bucket=bucket)

    path = random_file(2000, name="second.bin")
    second = api_upload(user, dataset["id"], path)
    run_worker()
    assert object_sha256(store, bucket, object_key("resource", second["id"])) == sha256_path(path)
    assert store.client.get_bucket_policy(Bucket=bucket)["Policy"]
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    run_worker()
    assert anonymous_status(store.object_url(bucket, object_key("resource", second["id"]))) == 200
