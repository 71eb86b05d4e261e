"""Leases in Redis (``leases.py``, ``locks.py``) and jobs on a host that cannot see a file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import ckan.plugins.toolkit as tk
import pytest
import redis
from ckan.tests import factories

from ckanext.dcor_depot import errors, placement
from ckanext.dcor_depot.jobs.symlink import symlink_resource
from ckanext.dcor_depot.jobs.upload import upload_resource
from ckanext.dcor_depot.leases import Lease
from ckanext.dcor_depot.model import depot_files

pytestmark = pytest.mark.usefixtures("with_plugins")


def _hold(url: str, name: str, ready) -> None:
    lease = Lease(name, seconds=2, client=redis.Redis.from_url(url))
    assert lease.acquire()
    ready.set()
    time.sleep(600)  # until SIGKILLed


def test_a_holder_killed_delays_the_others_by_at_most_one_lease_period():
    url = tk.config["ckan.redis.url"]
    name = f"test:{os.getpid()}:{time.monotonic()}"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(url, name, ready))
    holder.start()
    assert ready.wait(60)
    assert not Lease(name, seconds=2).acquire()  # held, renewed while the holder lives
    time.sleep(2.5)  # longer than one period: the holder's renewals keep it
    assert not Lease(name, seconds=2).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    killed = time.monotonic()
    other = Lease(name, seconds=2, wait=10)
    assert other.acquire()
    # one lease period (2 s) and at most one pause of the polling (1 s)
    assert time.monotonic() - killed <= 3.5
    other.release()
    assert redis.Redis.from_url(url).get(f"dcor_depot:lease:{name}") is None


def test_only_the_holder_releases_a_lease():
    name = f"test:{os.getpid()}:{time.monotonic()}"
    first = Lease(name, seconds=5)
    assert first.acquire()
    second = Lease(name, seconds=5)
    second.release()  # not its lease: nothing happens
    assert not Lease(name).acquire()
    first.release()
    assert Lease(name).acquire()


@pytest.mark.usefixtures("clean_db", "clean_index", "clean_queues", "clean_circles")
def test_a_job_on_a_host_that_cannot_see_the_file_says_what_to_share(api_upload, random_file):
    user = factories.User()
    org = factories.Organization(users=[{"name": user["name"], "capacity": "admin"}])
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    resource = api_upload(user, dataset["id"], random_file(2000))
    path = placement.ckan_path(resource["id"])
    path.unlink()  # as on a worker host that does not share ckan.storage_path
    for job in (symlink_resource, upload_resource):
        with pytest.raises(errors.JobError) as error:
            job(resource["id"])
        message = str(error.value)
        assert f"is missing at {path} on host" in message
        assert "share ckan.storage_path and ckanext.dcor_depot.depots_path" in message
    # nothing was changed: no depot file, no object, no lease left behind
    assert not path.exists() and not path.is_symlink()
    assert not depot_files.file_records(resource_ids=[resource["id"]])[0].bucket
    leases = redis.Redis.from_url(tk.config["ckan.redis.url"]).keys("dcor_depot:lease:*")
    assert [k for k in leases if resource["id"].encode() in k] == []
