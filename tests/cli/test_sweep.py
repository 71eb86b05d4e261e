"""The sweep of ``ckan run-jobs-dcor-depot``: what changed while no job ran is found
and converged (tags, moves, deleted resources, orphans); --dry-run only lists."""

from __future__ import annotations

import pytest
from ckan.lib.jobs import get_queue
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import run_jobs_dcor_depot
from ckanext.dcor_depot.jobs import queue
from ckanext.dcor_depot.storage.s3 import object_key

from ..conftest import anonymous_status, appended

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


def public_url(store, dataset: dict, resource: dict) -> str:
    return store.object_url(*placement.file_of(store, dataset["id"], resource["id"]).recorded)


def test_what_changed_while_no_job_ran_is_found_and_converged(cli, random_file, store):
    sysadmin = factories.Sysadmin()
    circle_a, circle_b = factories.Organization(), factories.Organization()
    cells = factories.Dataset(owner_org=circle_a["id"], private=False)
    kept, dropped = (
        appended(cli, cells, random_file(1000 + i, name=f"f{i}.bin")) for i in range(2)
    )
    moving = factories.Dataset(owner_org=circle_a["id"], private=False)
    far = appended(cli, moving, random_file(3000, name="far.bin"))
    kept_url, dropped_url = public_url(store, cells, kept), public_url(store, cells, dropped)
    far_url = public_url(store, moving, far)
    assert {anonymous_status(u) for u in (kept_url, dropped_url, far_url)} == {200}

    # no worker runs: a tag removed behind the back, a resource deleted, a dataset moved
    # to another circle, a public object nobody accounts for; then the queued jobs are lost
    bucket, key = placement.file_of(store, cells["id"], kept["id"]).recorded
    store.set_public(bucket, key, False)
    helpers.call_action("resource_delete", id=dropped["id"])
    helpers.call_action(
        "package_patch",
        context={"user": sysadmin["name"]},
        id=moving["id"],
        owner_org=circle_b["id"],
    )
    orphan = object_key("resource", "0123456789abcdef")
    store.client.put_object(Bucket=bucket, Key=orphan, Body=b"nobody's")
    store.set_public(bucket, orphan, True)
    for name in queue.QUEUES:
        get_queue(name).empty()

    dry = cli.invoke(run_jobs_dcor_depot, ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would converge dataset {cells['name']}: 2 tags changed" in dry.output
    assert f"would converge dataset {moving['name']}" in dry.output
    assert "1 objects to move to the circle's bucket" in dry.output
    assert f"would make private: orphan s3://{bucket}/{orphan}" in dry.output
    assert "2 would be converged, 0 objects moved to their circle's bucket" in dry.output
    assert anonymous_status(dropped_url) == 200  # a dry run changes nothing

    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 0, result.output
    assert "2 datasets with files: 2 converged, 1 objects moved" in result.output
    assert "1 orphaned objects, 1 of them made private; 0 failed" in result.output
    assert anonymous_status(kept_url) == 200
    assert anonymous_status(dropped_url) == 403
    assert anonymous_status(store.object_url(bucket, orphan)) == 403
    old = far_url.split("/", 3)[3].split("/", 1)
    assert store.object_info(*old) is None  # the old copy is gone
    assert anonymous_status(public_url(store, moving, far)) == 200

    again = cli.invoke(run_jobs_dcor_depot, [])
    assert again.exit_code == 0, again.output
    assert "2 datasets with files: 0 converged" in again.output
    assert "1 orphaned objects, 0 of them made private" in again.output


def test_what_cannot_be_fixed_exits_1_with_the_reason(cli, random_file, store):
    circle_a, circle_b = factories.Organization(), factories.Organization()
    dataset = factories.Dataset(owner_org=circle_a["id"], private=False)
    lost = appended(cli, dataset, random_file(2000, name="lost.bin"))
    store.delete_object(*placement.file_of(store, dataset["id"], lost["id"]).recorded)
    helpers.call_action("package_patch", id=dataset["id"], owner_org=circle_b["id"])
    for name in queue.QUEUES:
        get_queue(name).empty()

    result = cli.invoke(run_jobs_dcor_depot, [])
    assert result.exit_code == 1
    assert f"FAILED dataset {dataset['id']}: Cannot copy" in result.output
    assert "the source object is missing" in result.output
