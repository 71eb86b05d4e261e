"""``ckan run-jobs-dcor-depot``: catches up on resources whose jobs never ran
(Redis was down when they were uploaded), is idempotent, and says what failed."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import ckan.lib.redis
import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import leases, placement
from ckanext.dcor_depot.cli import run_jobs_dcor_depot
from ckanext.dcor_depot.jobs import queue
from ckanext.dcor_depot.storage.s3 import object_key

from ..conftest import TEST_INI, http, make_old, sha256_hex

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


class RedisSwitch:
    """Points this process's Redis clients elsewhere, and back."""

    def __init__(self, monkeypatch, ckan_config):
        self.monkeypatch = monkeypatch
        self.ckan_config = ckan_config

    def point_to(self, url: str) -> None:
        self.monkeypatch.setitem(self.ckan_config, "ckan.redis.url", url)
        self.monkeypatch.setattr(ckan.lib.redis, "_connection_pool", None)
        queue._redis_with_timeouts.cache_clear()

    def restore(self) -> None:
        self.monkeypatch.undo()
        queue._redis_with_timeouts.cache_clear()


@pytest.fixture
def redis_switch(monkeypatch, ckan_config):
    switch = RedisSwitch(monkeypatch, ckan_config)
    yield switch
    switch.restore()


@pytest.fixture
def redis_down(redis_switch):
    """Redis unreachable for this process: real connections to a closed port."""
    redis_switch.point_to("redis://127.0.0.1:1/1")
    return redis_switch


class SilentRedis:
    """Accepts connections and never answers: an unresponsive Redis. Counts the connections
    (a client opens a new one for each command after a timeout)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}/1"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                return  # closed

    def close(self) -> None:
        self.server.close()
        for each in self.accepted:
            each.close()


@pytest.fixture
def redis_hanging(redis_switch):
    """A Redis that accepts connections and never answers."""
    silent = SilentRedis()
    redis_switch.point_to(silent.url)
    yield silent
    silent.close()


@pytest.fixture
def public_dataset():
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    return user, factories.Dataset(owner_org=org["id"], private=False, user=user)


def test_upload_succeeds_while_redis_is_down_and_run_jobs_catches_up(
    public_dataset, api_upload, rtdc_file, redis_down, cli, caplog, run_ckan
):
    user, dataset = public_dataset
    path = rtdc_file(name="late.rtdc")
    resource = api_upload(user, dataset["id"], path)
    assert "run-jobs-dcor-depot will catch up" in caplog.text.replace("`", "")
    redis_down.restore()  # Redis is back
    ckan_path = placement.ckan_path(resource["id"])
    assert not ckan_path.is_symlink()

    dry = cli.invoke(run_jobs_dcor_depot, ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"resource {resource['id']}" in dry.output
    assert "would run symlink, s3-upload, dc-metadata" in dry.output
    assert not ckan_path.is_symlink()  # a dry run changes nothing
    assert "s3_available" not in helpers.call_action("resource_show", id=resource["id"])

    # as an operator runs it: a separate process
    result = run_ckan(TEST_INI, "run-jobs-dcor-depot")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 resources: 1 done, 0 already fine, 0 failed" in result.stdout
    shown = helpers.call_action("resource_show", id=resource["id"])
    assert ckan_path.is_symlink()
    assert shown["s3_available"] is True
    assert shown["format"] == "RT-DC"
    assert http.get(shown["s3_url"], timeout=30).status_code == 200

    again = cli.invoke(run_jobs_dcor_depot, [])
    assert again.exit_code == 0, again.output
    assert "1 resources: 0 done, 1 already fine, 0 failed" in again.output


def test_a_request_waits_on_a_redis_that_never_answers_once(
    public_dataset, api_upload, random_file, redis_hanging, caplog
):
    # an upload queues its file's job and announces its dataset's change: two things
    # that ask Redis; after the first timeout the request asks no more
    user, dataset = public_dataset
    done = []
    started = time.monotonic()
    upload = threading.Thread(
        target=lambda: done.append(api_upload(user, dataset["id"], random_file(100)))
    )
    upload.start()
    upload.join(timeout=60)  # CKAN's own Redis client has no timeout
    took = time.monotonic() - started
    assert done, "resource_create hung on an unresponsive Redis"
    assert len(redis_hanging.accepted) == 1, "the request asked the silent Redis again"
    assert took < 2 * leases.connection().connection_pool.connection_kwargs["socket_timeout"]
    assert "could not queue" in caplog.text and "Timeout" in caplog.text
    assert "did not queue" in caplog.text  # the second thing to queue: not asked
    assert done[0]["url_type"] == "upload"  # the upload itself stands


def test_wrong_visibility_and_a_missing_object_are_repaired(
    public_dataset, api_upload, random_file, cli, store
):
    user, dataset = public_dataset
    path = random_file(2000)
    resource = api_upload(user, dataset["id"], path)
    assert cli.invoke(run_jobs_dcor_depot, []).exit_code == 0
    shown = helpers.call_action("resource_show", id=resource["id"])
    # someone removes the tag behind the extension's back
    bucket, key = shown["s3_url"].split("/", 3)[3].split("/", 1)
    store.set_public(bucket, key, False)
    assert http.get(shown["s3_url"], timeout=30).status_code == 403
    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 0, result.output
    assert "converged dataset" in result.output and "1 tags changed" in result.output
    assert http.get(shown["s3_url"], timeout=30).status_code == 200

    # the object is lost (what the audit reports MISSING): uploaded again from the depot file
    store.client.delete_object(Bucket=bucket, Key=key)
    assert store.object_info(bucket, key) is None
    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 0, result.output
    assert f"resource {resource['id']}" in result.output and "ran s3-upload" in result.output
    again = http.get(shown["s3_url"], timeout=30)
    assert again.status_code == 200
    assert sha256_hex(again.content) == sha256_hex(path.read_bytes())
    assert helpers.call_action("resource_show", id=resource["id"])["sha256"] == shown["sha256"]


def test_lost_file_is_reported_and_exits_1(
    public_dataset, api_upload, random_file, redis_down, cli
):
    user, dataset = public_dataset
    resource = api_upload(user, dataset["id"], random_file(2000))
    placement.ckan_path(resource["id"]).unlink()
    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 1
    assert "0 done, 0 already fine, 1 failed" in result.output
    assert f"FAILED resource {resource['id']}" in result.output
    assert "the file is missing at" in result.output


def test_deleted_datasets_and_old_resources_are_left_alone(
    public_dataset, api_upload, random_file, redis_down, cli
):
    user, dataset = public_dataset
    old = api_upload(user, dataset["id"], random_file(2000, name="old.bin"))
    other = factories.Dataset(owner_org=dataset["owner_org"], user=user)
    gone = api_upload(user, other["id"], random_file(2000, name="gone.bin"))
    helpers.call_action("package_delete", id=other["id"])
    make_old(old)
    redis_down.restore()  # the catch-up runs once Redis is back (its leases live there)

    recent = cli.invoke(run_jobs_dcor_depot, ["--modified-days", "30"])
    assert recent.exit_code == 0, recent.output
    assert "0 resources" in recent.output
    everything = cli.invoke(run_jobs_dcor_depot, [])
    assert everything.exit_code == 0, everything.output
    assert "1 resources: 1 done" in everything.output
    assert placement.ckan_path(old["id"]).is_symlink()
    assert not placement.ckan_path(gone["id"]).is_symlink()


def test_negative_days_are_refused(cli):
    result = cli.invoke(run_jobs_dcor_depot, ["--modified-days", "-1"])
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.output


def test_upload_straight_to_s3_registered_while_redis_is_down_is_caught_up(
    public_dataset, app, random_file, redis_down, cli, store, tmp_path, ckan_config, monkeypatch
):
    from ..logic.test_upload_route import uploaded

    user, dataset = public_dataset
    path = random_file(7 * 1024**2, "late.bin")
    answer = uploaded(app, user, dataset, path)
    redis_down.restore()  # also undoes this test's other monkeypatches: set them after
    backup_root = tmp_path / "backup"
    monkeypatch.setitem(ckan_config, "dcor_object_store.local_backup_location", str(backup_root))
    rid = answer["resource_id"]
    shown = helpers.call_action("resource_show", id=rid)
    assert not shown.get("sha256")
    object_url = store.object_url(
        store.circle_bucket(dataset["owner_org"]), object_key("resource", rid)
    )
    assert http.get(object_url, timeout=30).status_code == 403  # private until hashed

    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 0, result.output
    assert f"resource {rid} (dataset {dataset['name']}): ran s3-sha256, backup" in result.output
    shown = helpers.call_action("resource_show", id=rid)
    assert shown["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert http.get(object_url, timeout=30).status_code == 200
    copy = backup_root / rid[:3] / rid[3:6] / rid[6:]
    assert copy.read_bytes() == path.read_bytes()

    again = cli.invoke(run_jobs_dcor_depot, [])
    assert "1 resources: 0 done, 1 already fine, 0 failed" in again.output
