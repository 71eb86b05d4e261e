"""Several hosts (issue #18): workers that share CKAN's database, Redis, the
object store and the shared folders, each host with its own host name (a UTS
namespace of its own) and its own tmp folder, as the README's "Several hosts"
describes. Each object is counted in a versioned bucket: a second upload of a
key would be a second version."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import requests
from ckan.lib.redis import connect_to_redis
from ckan.tests import factories, helpers
from rq import Worker
from rq.job import Job

from ckanext.dcor_depot import config, placement
from ckanext.dcor_depot.jobs import queue
from ckanext.dcor_depot.model import depot_files
from ckanext.dcor_depot.storage.s3 import SHA256_METADATA_KEY, MiB, object_key

from ..conftest import (
    CKAN,
    TEST_INI,
    Workers,
    derived_ini,
    kill_tree,
    object_sha256,
    sha256_path,
    stop_at,
    wait_until_stopped,
    worker_command,
)

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

HOSTS = ("dcor-host-a", "dcor-host-b")


def on_host(hostname: str, command: list[str]) -> list[str]:
    """``command`` in a UTS namespace of its own whose host name is ``hostname``."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *command]


def host_ini(folder: Path, base: str, hostname: str, **options) -> Path:
    """A worker host's ini: its own tmp folder (and ``options``); the rest is shared."""
    tmp = folder / f"{hostname}-tmp"
    tmp.mkdir(exist_ok=True)
    return derived_ini(
        folder, base, f"{hostname}.ini", **{"ckanext.dcor_depot.tmp_dir": str(tmp), **options}
    )


@pytest.fixture
def versioned_circles(store):
    """Factory: the circle buckets of organizations, versioned (every PUT of a key counts)."""

    def make(*orgs: dict) -> dict[str, str]:
        buckets = {}
        for org in orgs:
            bucket = store.circle_bucket(org["id"])
            store.ensure_bucket(bucket)
            store.client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
            buckets[org["id"]] = bucket
        return buckets

    return make


def uploads_per_key(store, bucket: str) -> collections.Counter:
    """How many times each key of a versioned bucket was uploaded.

    A multipart upload is completed without the SHA-256 (known only after its
    last part) and then copied onto itself to record it (``parts.py``): that
    version, a multipart ETag with the SHA-256 in its metadata, is no upload.
    """
    count = collections.Counter()
    for page in store.client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        assert not page.get("DeleteMarkers")
        for version in page.get("Versions", []):
            key = version["Key"]
            head = store.client.head_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
            recorded = "-" in version["ETag"] and SHA256_METADATA_KEY in head["Metadata"]
            count[key] += 0 if recorded else 1
    return count


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()] if folder.exists() else []


@pytest.fixture
def depots_of_hosts():
    """The users depots of the simulated hosts, removed after the test."""
    folders = [config.depots_path() / f"users-{host}" for host in HOSTS]
    yield folders
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_two_hosts_with_two_workers_each(
    tmp_path, ckan_server, random_file, store, versioned_circles, depots_of_hosts
):
    user = factories.User()
    member = [{"name": user["name"], "capacity": "editor"}]
    orgs = [factories.Organization(users=member) for _ in range(2)]
    datasets = [
        factories.Dataset(owner_org=orgs[0]["id"], user=user),
        factories.Dataset(owner_org=orgs[0]["id"], user=user, private=True),
        factories.Dataset(owner_org=orgs[1]["id"], user=user),
    ]
    buckets = versioned_circles(*orgs)
    token = factories.APIToken(user=user["name"])["token"]
    files = [random_file(MiB, name=f"small-{i:03d}.bin") for i in range(50)]
    files += [random_file(32 * MiB, name=f"big-{i}.bin") for i in range(4)]  # multipart
    expected = {path.name: (sha256_path(path), path.stat().st_size) for path in files}

    server = ckan_server()
    inis = {host: host_ini(tmp_path, server.ini, host) for host in HOSTS}
    pools = [
        Workers(2, command=on_host(host, worker_command(str(inis[host]), burst=False)))
        for host in HOSTS
    ]
    try:
        workers = Worker.all(connection=connect_to_redis())
        pids = set().union(*(pool.pids for pool in pools))
        assert {w.hostname for w in workers if w.pid in pids} == set(HOSTS)

        def upload_all(dataset: dict, paths: list[Path]) -> list[dict]:
            created = []
            for path in paths:
                with open(path, "rb") as fd:
                    answer = requests.post(
                        f"{server.url}/api/action/resource_create",
                        data={"package_id": dataset["id"], "name": path.name},
                        files={"upload": (path.name, fd)},
                        headers={"Authorization": token},
                        timeout=600,
                    )
                assert answer.status_code == 200, answer.text[:1000]
                created.append(answer.json()["result"])
            return created

        # three clients at once, one per dataset, while the four workers run
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(upload_all, dataset, files[i::3]) for i, dataset in enumerate(datasets)
            ]
            resources = [r for future in futures for r in future.result()]
        pools[0].drain(timeout=600)
    finally:
        for pool in pools:
            pool.stop()

    assert len(resources) == len(files)
    # each object was written exactly once, and nothing else was
    wanted = collections.defaultdict(set)
    for resource in resources:
        owner = next(d["owner_org"] for d in datasets if d["id"] == resource["package_id"])
        wanted[buckets[owner]].add(object_key("resource", resource["id"]))
    for bucket, keys in wanted.items():
        uploads = uploads_per_key(store, bucket)
        assert set(uploads) == keys
        assert set(uploads.values()) == {1}, [k for k, n in uploads.items() if n != 1]
        assert not store.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    # every resource's fields, its depot file on the host that moved it
    moved_by = collections.Counter()
    for resource in resources:
        shown = helpers.call_action("resource_show", id=resource["id"])
        sha256, size = expected[resource["name"]]
        assert (shown["sha256"], shown["size"], shown["s3_available"]) == (sha256, size, True)
        location = placement.file_of(store, resource["package_id"], resource["id"]).recorded
        assert shown["etag"] == store.object_info(*location).etag
        ckan_path = placement.ckan_path(resource["id"])
        depot = Path(os.readlink(ckan_path))
        host = depot.relative_to(config.depots_path()).parts[0].removeprefix("users-")
        moved_by[host] += 1
        if size > MiB:
            assert sha256_path(depot) == sha256
    assert set(moved_by) == set(HOSTS), moved_by  # both hosts worked
    assert depot_files.file_records(resource_ids=[r["id"] for r in resources])  # recorded
    # nothing left behind: tmp folders, part files, leases
    for host in HOSTS:
        assert files_in(tmp_path / f"{host}-tmp") == []
    assert not [p for folder in depots_of_hosts for p in folder.rglob(".*part")]
    assert not connect_to_redis().keys("dcor_depot:lease:*")


def test_a_lease_holder_killed_mid_upload_and_another_host_completes(
    tmp_path, api_upload, random_file, store, versioned_circles, depots_of_hosts, ckan_config
):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "editor"}])
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    bucket = versioned_circles(org)[org["id"]]
    path = random_file(24 * MiB, name="large.bin")
    sha256 = sha256_path(path)
    resource = api_upload(user, dataset["id"], path)
    key = object_key("resource", resource["id"])
    # short leases: the other host waits for the dead holder's to expire
    short = {"ckanext.dcor_depot.lease_seconds": 3}
    inis = {host: host_ini(tmp_path, TEST_INI, host, **short) for host in HOSTS}

    # host a's worker takes the file job; it stops itself once the store holds a part of
    # the upload, and is killed there
    marker = tmp_path / "stopped"
    worker = subprocess.Popen(
        on_host(HOSTS[0], worker_command(str(inis[HOSTS[0]]))),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=stop_at("s3-part", marker),
    )
    lease = f"dcor_depot:lease:upload:{resource['id']}"
    client = redis.Redis.from_url(ckan_config["ckan.redis.url"])
    wait_until_stopped(marker, worker, "the first part of host a's upload")
    (upload,) = store.client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    parts = store.client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    assert 1 <= len(parts["Parts"]) < 5  # 24 MiB in parts of 5 MiB: killed in the middle
    kill_tree(worker.pid)
    worker.wait()
    assert client.exists(lease)  # the dead holder's lease is still there
    assert store.object_info(bucket, key) is None

    # host b's catch-up waits for the dead holder's lease to expire (3 s), then
    # uploads the file once and aborts the dead holder's unfinished upload
    done = subprocess.run(
        on_host(HOSTS[1], [CKAN, "-c", str(inis[HOSTS[1]]), "run-jobs-dcor-depot"]),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert uploads_per_key(store, bucket) == {key: 1}
    assert not store.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    shown = helpers.call_action("resource_show", id=resource["id"])
    assert (shown["sha256"], shown["s3_available"]) == (sha256, True)
    assert object_sha256(store, bucket, key) == sha256
    assert not client.exists(lease)
    # RQ still lists the killed worker's job as started: not for the next tests to wait on
    Job.fetch(queue.job_id("file", resource["id"]), connection=connect_to_redis()).delete()
