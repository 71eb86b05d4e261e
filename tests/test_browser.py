"""End to end in a real browser (headless Debian Chromium, driven as in the demo):
CKAN's upload form, the depot's jobs in a real worker, the resource page and its
Download button, the dataset's edit form. A screenshot of every step is written to
test-artifacts/browser/ckan-VERSION/TEST/."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import ckan
import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import config, placement
from ckanext.dcor_depot.storage.s3 import object_key

from .conftest import REPO_DIR, anonymous_status, demo, http, object_sha256, sha256_hex, sha256_path

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

ARTIFACTS = REPO_DIR / "test-artifacts" / "browser"
PASSWORD = "browser-test-Passw0rd"


@pytest.fixture
def browser(request):
    """Factory: a headless Chromium on a site; its screenshots in the test's artifact folder."""
    folder = ARTIFACTS / f"ckan-{ckan.__version__}" / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    started = []

    def start(site_url: str, name: str = "") -> demo.Browser:
        started.append(demo.Browser(site_url, folder / name if name else folder))
        return started[-1]

    yield start
    for web in started:
        web.close_with_shot("end")


def test_web_form_upload_reaches_depot_and_s3_and_downloads_the_same_bytes(
    ckan_server, browser, run_worker, rtdc_file, store
):
    factories.User(name="alice", password=PASSWORD)
    org = factories.Organization(name="hl60-lab", users=[{"name": "alice", "capacity": "admin"}])
    dataset = factories.Dataset(name="hl60", owner_org=org["id"], private=True)
    path = rtdc_file(2000, "cells.rtdc")
    expected = sha256_path(path)
    server = ckan_server()
    site_url = server.url

    web = browser(site_url, "alice")
    # a site colder than any: the page's own scripts never start (the form does not
    # fill in the file's name by itself)
    web.without_page_scripts()
    web.log_in("alice", PASSWORD)
    rid = web.upload("hl60", path)
    resource = helpers.call_action("resource_show", id=rid)
    assert resource["url_type"] == "upload"
    # CKAN puts the site URL of the process that shows the resource in front (this one's)
    download = f"{site_url}/dataset/{dataset['id']}/resource/{rid}/download/cells.rtdc"
    assert resource["url"].endswith(download.removeprefix(site_url))

    run_worker(server.ini)

    # the depot's jobs: depot file behind CKAN's symlink, S3 object, checksum, DC metadata
    link = placement.ckan_path(rid)
    assert link.is_symlink()
    assert link.resolve().is_relative_to(config.depots_path().resolve())
    assert sha256_path(link.resolve()) == expected
    bucket, key = store.circle_bucket(org["id"]), object_key("resource", rid)
    assert object_sha256(store, bucket, key) == expected
    resource = helpers.call_action("resource_show", id=rid)
    assert resource["sha256"] == expected and resource["s3_available"]
    assert resource["dc:experiment:event count"] == 2000

    # the resource page's Download button gives the uploaded bytes
    downloaded = web.download("hl60", rid)
    assert downloaded.name == "cells.rtdc"
    assert sha256_path(downloaded) == expected

    # private: nobody else gets the file, from CKAN or from S3
    assert anonymous_status(download) == 403
    assert anonymous_status(store.object_url(bucket, key)) == 403

    # the dataset's edit form makes it public; the worker follows in S3
    web.set_public("hl60", True)
    assert helpers.call_action("package_show", id="hl60")["private"] is False
    run_worker(server.ini)
    answer = http.get(store.object_url(bucket, key), timeout=60)
    assert answer.status_code == 200
    assert sha256_hex(answer.content) == expected
    # and a visitor who is not logged in downloads it from the resource page
    visitor = browser(site_url, "visitor")
    visitor.without_page_scripts()
    assert sha256_path(visitor.download("hl60", rid)) == expected


def test_a_browser_step_that_cannot_go_on_fails_with_its_screenshot_and_console(
    ckan_server, browser, rtdc_file
):
    factories.User(name="alice", password=PASSWORD)
    web = browser(ckan_server().url)
    with pytest.raises(demo.CheckFailed) as refused:
        web.log_in("alice", "not-the-password")
    assert re.match(r"logging in as alice: refused: .*[Ll]ogin failed", str(refused.value))
    shot = re.search(r"screenshot: (\S+\.png)", str(refused.value))
    assert shot and Path(shot[1]).is_file(), str(refused.value)

    # a form that is not there: the step fails at once, with what the browser said
    started = time.monotonic()
    with pytest.raises(demo.CheckFailed) as missing:
        web.upload("no-such-dataset", rtdc_file())
    assert time.monotonic() - started < demo.BROWSER_TIMEOUT
    message = str(missing.value)
    assert message.startswith("uploading measurement.rtdc in the 'Add data' form: ")
    assert "#resource-url-upload" in message  # the element it could not find
    shot = re.search(r"screenshot: (\S+\.png)", message)
    assert shot and Path(shot[1]).is_file(), message
    assert re.search(r"browser console: [1-9]\d* messages", message), message
    assert re.search(r"/dataset/no-such-dataset/resource/new - Failed to load resource", message)
