"""The depot health page (/ckan-admin/depot): sysadmins see bytes and files per circle,
a job that failed with its reason, a copy the audit found wrong; every number leads to
the resources behind it; everybody else gets 403. Also in headless Chromium, with
screenshots in test-artifacts/browser/ckan-VERSION/TEST/."""

from __future__ import annotations

import re
import socket
import time

import pytest
from ckan.lib.jobs import get_queue
from ckan.lib.redis import connect_to_redis
from ckan.tests import factories, helpers
from rq.job import Job

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import append_resource, dcor_verify_object_store, run_jobs_dcor_depot
from ckanext.dcor_depot.jobs.queue import NORMAL, _latest_key
from ckanext.dcor_depot.model import checks
from ckanext.dcor_depot.operations import health
from ckanext.dcor_depot.storage.s3 import object_key

from .conftest import corrupt_object, derived_ini
from .test_browser import PASSWORD, browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


UNREACHABLE = "http://127.0.0.1:9"


def get(app, path: str, user: dict | None = None):
    headers = {}
    if user is not None:
        headers["Authorization"] = factories.APIToken(user=user["name"])["token"]
    return app.get(path, headers=headers, status=None)


def href(cell: str) -> str:
    return re.search(r'href="([^"]+)"', cell).group(1).replace("&amp;", "&")


def test_sysadmins_see_a_failed_job_and_a_mismatch_others_get_403(
    app,
    api_upload,
    random_file,
    run_worker,
    cli,
    store,
    ckan_server,
    monkeypatch,
    browser,  # noqa: F811
):
    admin = factories.Sysadmin(name="root", password=PASSWORD)
    editor = factories.User()
    org = factories.Organization(
        name="lab", title="HL60 lab", users=[{"name": editor["name"], "capacity": "admin"}]
    )
    dataset = factories.Dataset(name="hl60", owner_org=org["id"], user=editor)
    # a job that fails: the uploaded file is away when the worker comes
    lost = api_upload(editor, dataset["id"], random_file(3000, name="lost.bin"))
    away = random_file(1, name="away.bin")
    placement.ckan_path(lost["id"]).rename(away)
    (failure,) = run_worker(failures_allowed=True)
    assert failure.startswith(f"dcor-depot-file-{lost['id']}:") and "is missing at" in failure
    # a copy the audit finds wrong: other bytes behind the object's metadata
    kept = cli.invoke(append_resource, [str(random_file(4000, name="kept.bin")), "hl60"])
    assert kept.exit_code == 0, kept.output
    far = helpers.call_action("package_show", id="hl60")["resources"][-1]
    bucket = store.circle_bucket(org["id"])
    corrupt_object(store, bucket, far)
    assert cli.invoke(dcor_verify_object_store, []).exit_code == 1

    for who in (None, editor, factories.User()):
        assert get(app, "/ckan-admin/depot", who).status_code == 403
        assert get(app, "/ckan-admin/depot/failed", who).status_code == 403

    page = get(app, "/ckan-admin/depot", admin)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Depot health" in text and "HL60 lab" in text
    row = re.search(r'<tr data-circle="lab">(.*?)</tr>', text, re.S).group(1)
    cells = dict(re.findall(r'<td class="(\w+)"[^>]*>(.*?)</td>', row, re.S))
    assert re.search(r">1</a>", cells["files"])  # the appended file; the lost one is not in S3
    assert re.search(r">1</a>", cells["unverified"])  # the lost one
    assert "3.9 KiB" in cells["bytes"]
    assert re.search(r">\d+</a>", cells["failed"]) and re.search(r">1</a>", cells["findings"])
    audit = re.search(r'<p class="last-audit">(.*?)</p>', text, re.S).group(1)
    assert re.search(
        r">1</a> copies checked \(3.9 KiB read\), 0 left .*>1</a> findings", " ".join(audit.split())
    )
    checked = get(app, href(audit), admin).get_data(as_text=True)  # the first link: checked
    assert "Copies the last audit checked" in checked and "object: mismatch" in checked
    audit_links = re.findall(r'href="([^"]+)"', audit)
    assert audit_links[-1] == "/ckan-admin/depot/audit-findings"
    of_audit = get(app, audit_links[-1], admin).get_data(as_text=True)
    assert "What the last audit found" in of_audit and "1&ndash;1 of 1" in of_audit
    assert far["id"] in of_audit
    assert 'class="unfinished-audit"' not in text
    # an audit that started later and has not ended (it runs, or it was killed): said too,
    # and the last audit that ended is still the one shown
    started = checks.start_audit(None, None, None)
    text = get(app, "/ckan-admin/depot", admin).get_data(as_text=True)
    unfinished = re.search(r'<p class="unfinished-audit">(.*?)</p>', text, re.S).group(1)
    assert re.fullmatch(
        rf"Audit {started} started \d{{4}}-\d\d-\d\d \d\d:\d\d UTC on {socket.gethostname()} "
        r"has not ended: it runs, or it was stopped\.",
        " ".join(unfinished.split()),
    ), unfinished
    assert re.search(r'<p class="last-audit">(.*?)</p>', text, re.S).group(1) == audit

    assert href(cells["failed"]) == "/ckan-admin/depot/failed?circle=lab"
    failed = get(app, href(cells["failed"]), admin)
    failed_text = failed.get_data(as_text=True)
    assert failed.status_code == 200
    assert lost["id"] in failed_text and "is missing at" in failed_text
    assert f"/dataset/hl60/resource/{lost['id']}" in failed_text

    found = get(app, href(cells["findings"]), admin).get_data(as_text=True)
    assert far["id"] in found and "its bytes have SHA-256" in found
    assert f"s3://{bucket}/{object_key('resource', far['id'])}" in found
    assert (
        get(app, "/ckan-admin/depot/findings?circle=other", admin)
        .get_data(as_text=True)
        .count(far["id"])
        == 0
    )
    assert get(app, "/ckan-admin/depot/nothing", admin).status_code == 404

    # in a browser: the tab beside CKAN's own, the numbers, the failed job's reason
    web = browser(ckan_server().url)
    web.log_in("root", PASSWORD)
    web.open("/ckan-admin")
    web.click("a[href='/ckan-admin/depot']")
    web.shot("health")
    assert "HL60 lab" in web.css("#depot-circles").text
    web.click("tr[data-circle='lab'] td.failed a")
    web.shot("failed-jobs")
    assert "is missing at" in web.css("#depot-list").text
    web.open("/ckan-admin/depot")
    web.click("tr[data-circle='lab'] td.findings a")
    web.shot("findings")
    assert "its bytes have SHA-256" in web.css("#depot-list").text

    # the file is back; run-jobs-dcor-depot does the work: no failure listed any more
    path = placement.ckan_path(lost["id"])
    path.parent.mkdir(parents=True, exist_ok=True)  # gone on CKAN 2.11 (found empty)
    away.rename(path)
    caught_up = cli.invoke(run_jobs_dcor_depot, [])
    assert caught_up.exit_code == 0, caught_up.output
    assert "1 failed jobs of resources that are fine now: removed from RQ's list" in (
        caught_up.output
    )
    text = get(app, "/ckan-admin/depot", admin).get_data(as_text=True)
    row = re.search(r'<tr data-circle="lab">(.*?)</tr>', text, re.S).group(1)
    cells = dict(re.findall(r'<td class="(\w+)"[^>]*>(.*?)</td>', row, re.S))
    assert (cells["failed"], cells["unverified"]) == ("0", "0")
    assert re.search(r">2</a>", cells["files"])
    assert re.search(r">1</a>", cells["unchecked"])  # the object made by run-jobs-dcor-depot

    # a deleted resource's file is no longer audited: not listed as unchecked
    helpers.call_action("resource_delete", {"user": editor["name"]}, id=lost["id"])
    text = get(app, "/ckan-admin/depot", admin).get_data(as_text=True)
    row = re.search(r'<tr data-circle="lab">(.*?)</tr>', text, re.S).group(1)
    cells = dict(re.findall(r'<td class="(\w+)"[^>]*>(.*?)</td>', row, re.S))
    assert cells["unchecked"] == "0"

    # long lists come in pages
    monkeypatch.setattr(health, "PAGE_SIZE", 1)
    first = get(app, "/ckan-admin/depot/files", admin).get_data(as_text=True)
    assert "1&ndash;1 of 2" in first and "page=2" in first
    second = get(app, "/ckan-admin/depot/files?page=2", admin).get_data(as_text=True)
    assert "2&ndash;2 of 2" in second and "page=1" in second and "page=3" not in second
    for wrong in ("0", "two"):
        assert get(app, f"/ckan-admin/depot/files?page={wrong}", admin).status_code == 400


def test_a_dataset_job_queued_again_since_it_failed_is_no_failure_and_a_dead_job_is(
    app, run_worker, tmp_path, cli, random_file
):
    admin = factories.Sysadmin()
    dataset = factories.Dataset(owner_org=factories.Organization(name="lab")["id"])
    appended = cli.invoke(append_resource, [str(random_file(1000)), dataset["id"]])
    assert appended.exit_code == 0, appended.output
    # the dataset turns private; its convergence fails: the object store is unreachable
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    unreachable = str(derived_ini(tmp_path, **{"dcor_object_store.endpoint_url": UNREACHABLE}))
    (failure,) = run_worker(unreachable, failures_allowed=True)
    assert failure.startswith(f"dcor-depot-converge-{dataset['owner_org']}-")  # its circle's turn
    (failed,) = [e for e in health.listing("failed")[0] if e.what == "converge"]
    assert failed.package_name == dataset["name"] and "127.0.0.1:9" in failed.detail
    page = get(app, "/ckan-admin/depot/failed", admin).get_data(as_text=True)
    assert "converge" in page
    # the store is back: the sweep of run-jobs-dcor-depot converges the dataset, and the
    # failure is no longer listed
    caught_up = cli.invoke(run_jobs_dcor_depot, [])
    assert caught_up.exit_code == 0, caught_up.output
    assert "1 failed jobs of datasets that are fine now: removed from RQ's list" in (
        caught_up.output
    )
    assert health.listing("failed")[0] == []

    # it fails again
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    assert len(run_worker(unreachable, failures_allowed=True)) == 1
    assert [e.what for e in health.listing("failed")[0]] == ["converge"]

    # the dataset changes again and its convergence succeeds; RQ forgets the finished
    # job after its result_ttl: the old failure is not listed (the latest did not fail)
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    latest = connect_to_redis().get(_latest_key("converge", dataset["owner_org"])).decode()
    run_worker()
    assert Job.fetch(latest, connection=connect_to_redis()).get_status() == "finished"
    assert [e.what for e in health.listing("failed")[0]] == []
    Job.fetch(latest, connection=connect_to_redis()).delete()
    assert [e.what for e in health.listing("failed")[0]] == []

    # a job whose worker died while it ran (its lease in the started registry expired)
    queue = get_queue(NORMAL)
    job = queue.enqueue("ckanext.dcor_depot.jobs.resource_jobs.never_run", "0123abcd")
    queue.remove(job)
    entry = f"{job.id}:dead" if hasattr(queue.started_job_registry, "parse_job_id") else job.id
    queue.connection.zadd(queue.started_job_registry.key, {entry: time.time() - 60})
    (dead,) = health.listing("failed")[0]
    assert dead.detail.startswith("abandoned: its worker stopped without ending it")
    queue.connection.zadd(queue.started_job_registry.key, {entry: time.time() + 600})
    assert health.listing("failed")[0] == []
    waiting = health.listing("waiting")[0]
    assert [e.detail for e in waiting if e.what != "converge"] == ["running"]
    # the two failed turns' retries: their circle's turns, scheduled (30 s after each failure)
    assert {(e.what, e.detail) for e in waiting if e.what == "converge"} <= {
        ("converge", "scheduled")
    }
    queue.connection.zrem(queue.started_job_registry.key, entry)
