"""The demo's walkthrough: one .rtdc file through a running DCOR depot, shown step by step.

Run by ``scripts/demo.sh`` (with the demo's virtualenv) once CKAN's web server and
the RQ workers on the depot's queues are up. In headless Chromium (Debian's
chromium and chromium-driver) it logs in as the sysadmin, uploads a generated
.rtdc file into a new private dataset through CKAN's web form and downloads it
from the resource page; it waits for the depot's jobs and prints where the file
now lives: the depot path, CKAN's symlink, the S3 bucket and key, the SHA-256 of
the S3 object checked against the local file, and what an anonymous GET of the
object gets. Then it makes the dataset public in the web form and shows the
anonymous GET succeed. Exit 1 when any check fails, with the reason.

The end-to-end test (tests/test_browser.py) drives the browser with the same
``Browser`` class; the tests' .rtdc files come from ``write_rtdc``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import requests

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds a browser step (a page, a form, a download) may wait before it fails.
BROWSER_TIMEOUT = 60
#: Seconds the depot's jobs may take.
JOB_TIMEOUT = 600
DEMO_CIRCLE = "demo-circle"


class CheckFailed(Exception):
    """Something the walkthrough shows is not as it must be."""


def store_ca_bundle() -> str | None:
    """The CA bundle CKAN verifies the object store's certificate with, if one is configured.

    The development stack's gateway has a certificate of a private CA
    (``scripts/ceph-rgw.sh``): the walkthrough's HTTP client and browser trust
    that CA as a user's would, and nothing else is switched off.
    """
    from ckanext.dcor_depot import config

    settings = config.s3_settings()
    verify = settings.ssl_verify if settings is not None else True
    return verify if isinstance(verify, str) else None


class TrustingStoreCA(requests.Session):
    """HTTP as a user's client: certificates verified, the object store's CA trusted."""

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("verify", store_ca_bundle() or True)
        return super().request(method, url, *args, **kwargs)


#: The walkthrough's and the tests' HTTP client (S3 URLs, CKAN's pages).
http = TrustingStoreCA()


def write_rtdc(path: Path, events: int = 200, images: bool = False, fluorescence=False) -> Path:
    """A real .rtdc measurement written with dclab (random features, optional images)."""
    import dclab

    rng = np.random.default_rng()
    with dclab.RTDCWriter(path, mode="reset") as writer:
        writer.store_metadata(
            {
                "experiment": {
                    "date": "2026-11-21",
                    "time": "12:00:00",
                    "sample": "test sample",
                    "run index": 1,
                },
                "setup": {
                    "channel width": 20,
                    "chip region": "channel",
                    "flow rate": 0.04,
                    "medium": "CellCarrier",
                },
                "imaging": {"pixel size": 0.34, "frame rate": 2000},
            }
        )
        writer.store_feature("deform", rng.uniform(0, 0.1, events))
        writer.store_feature("area_um", rng.uniform(20, 200, events))
        writer.store_feature("bright_avg", rng.uniform(80, 120, events))
        if images:
            writer.store_feature("image", rng.integers(0, 255, (events, 80, 250), dtype=np.uint8))
        if fluorescence:
            fl_meta = {"channel count": 1, "laser count": 1, "samples per event": 100}
            writer.store_metadata({"fluorescence": fl_meta})
            writer.store_feature("fl1_max", rng.uniform(0, 1000, events))
    return path


def sha256_of(chunks: Iterable[bytes]) -> str:
    """SHA-256 of a stream of bytes (an HTTP answer read in chunks)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def wait_until(what: str, check: Callable[[], object], timeout: float = BROWSER_TIMEOUT):
    """``check()``'s first true answer; CheckFailed when there is none within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not the case after {timeout:.0f} s")
        time.sleep(0.25)  # polling a condition of another process


def trust_ca(home: Path, ca_bundle: Path) -> None:
    """Chromium run with ``HOME=home`` trusts the CA(s) in ``ca_bundle`` (its NSS database)."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = ["certutil", "-d", f"sql:{nssdb}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, capture_output=True)
    pems = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", ca_bundle.read_text(), re.S
    )
    for number, pem in enumerate(pems):
        subprocess.run(
            [*certutil, "-A", "-t", "C,,", "-n", f"object store CA {number}"],
            input=pem.encode(),
            check=True,
            capture_output=True,
        )


class Browser:
    """Headless Debian Chromium on one CKAN site; a screenshot of every step in ``artifacts``.

    No step depends on when the page's own scripts run (on a cold site CKAN's
    modules start only after a request for the locale's texts): each does what a
    person would do, and waits only for what it needs. A step that cannot go on
    fails within :data:`BROWSER_TIMEOUT` with :class:`CheckFailed` naming its
    screenshot and the browser console's messages.
    """

    def __init__(self, site_url: str, artifacts: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.site_url = site_url.rstrip("/")
        self.artifacts = artifacts
        self.downloads = artifacts / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self._shots = 0
        self._console: list[str] = []
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # --no-sandbox: Chromium's sandbox refuses to run as root
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        options.add_argument("--window-size=1280,1100")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self._home = tempfile.TemporaryDirectory(prefix="dcor-depot-chromium-")
        service = Service(CHROMEDRIVER, env={**os.environ, "HOME": self._home.name})
        ca_bundle = store_ca_bundle()
        if ca_bundle:
            trust_ca(Path(self._home.name), Path(ca_bundle))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(BROWSER_TIMEOUT)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(self.downloads)},
        )

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._home.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close_with_shot(None)

    def close_with_shot(self, name: str | None) -> None:
        """Close the browser, after a last screenshot when ``name`` (a dead browser gives none)."""
        from selenium.common.exceptions import WebDriverException

        try:
            if name:
                self.shot(name)
        except WebDriverException:
            pass
        finally:
            self.close()

    def shot(self, name: str) -> Path:
        self._shots += 1
        path = self.artifacts / f"{self._shots:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console(self) -> list[str]:
        """The browser console's messages so far (errors, warnings, logs), oldest first."""
        from selenium.common.exceptions import WebDriverException

        try:
            entries = self.driver.get_log("browser")
        except WebDriverException:
            entries = []
        self._console += [f"{entry['level']} {entry['message']}" for entry in entries]
        return list(self._console)

    def without_page_scripts(self) -> None:
        """From now on the page's scripts never start: the request for the locale's texts,
        which CKAN's modules wait for, is refused (a site colder than any)."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/i18n/*"]})

    @contextlib.contextmanager
    def step(self, what: str):
        """A browser step: when it cannot go on, CheckFailed saying what, why, where its
        screenshot is and what the browser console said."""
        from selenium.common.exceptions import WebDriverException

        try:
            yield
        except (CheckFailed, WebDriverException) as exc:
            problem = exc.msg if isinstance(exc, WebDriverException) else str(exc)
            try:
                shot = str(self.shot("failed"))
            except WebDriverException as dead:
                shot = f"none ({dead.msg})"
            console = self.console()
            raise CheckFailed(
                f"{what}: {(problem or type(exc).__name__).strip()}\n"
                f"    screenshot: {shot}\n"
                f"    browser console: {len(console)} messages"
                + "".join(f"\n      {line}" for line in console[-20:])
            ) from exc

    def open(self, path: str) -> None:
        self.driver.get(self.site_url + path)

    def css(self, selector: str):
        return self.driver.find_element("css selector", selector)

    def click(self, selector: str) -> None:
        """Click an element as a user would, after scrolling it into the middle of the window."""
        element = self.css(selector)
        self.driver.execute_script(
            "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", element
        )
        element.click()

    def type_into(self, selector: str, text: str) -> None:
        """Type ``text`` into a form field in place of what it holds, as a person would."""
        field = self.css(selector)
        field.clear()
        field.send_keys(text)
        if field.get_attribute("value") != text:
            raise CheckFailed(f"{selector} holds {field.get_attribute('value')!r}, not {text!r}")

    def submit(self, button: str, form_path: str) -> None:
        """Click a form's ``button`` and wait for the next page; CheckFailed with the
        form's errors when the browser is still on a page under ``form_path``."""
        from selenium.common.exceptions import WebDriverException

        def next_page_loaded() -> bool:
            try:
                return self.driver.execute_script(
                    "return !window.dcorFormPage && document.readyState === 'complete'"
                )
            except WebDriverException:  # while the browser is between the two pages
                return False

        self.driver.execute_script("window.dcorFormPage = true")
        self.click(button)
        wait_until("the next page", next_page_loaded)
        if form_path in self.driver.current_url:
            raise CheckFailed(f"refused: {self.flash_errors() or 'the form came back'}")

    def flash_errors(self) -> str:
        found = self.driver.find_elements(
            "css selector", ".error-explanation, .alert-error, .alert-danger, .error-block"
        )
        return " ".join(element.text for element in found)

    def log_in(self, user: str, password: str) -> None:
        with self.step(f"logging in as {user}"):
            self.open("/user/login")
            self.type_into("#field-login", user)
            self.type_into("#field-password", password)
            self.shot("login")
            self.submit("form button[type=submit].btn-primary", "/user/login")

    def upload(self, dataset: str, path: Path) -> str:
        """Upload ``path`` through the dataset's "Add data" form; the new resource's id."""
        with self.step(f"uploading {path.name} in the 'Add data' form"):
            self.open(f"/dataset/{dataset}/resource/new")
            # what the form's "Upload" button does before it opens the file dialog
            upload = self.css("#resource-url-upload")
            self.driver.execute_script("arguments[0].checked = true", upload)
            self.css("#field-resource-upload").send_keys(str(path))
            # the page's script fills in the name once it runs; a person types it
            self.type_into("#field-name", path.name)
            self.shot("upload-form")
            self.submit("button[name=save][value=go-dataset-complete]", "/resource/new")
            self.shot("dataset-page")
            items = self.driver.find_elements("css selector", "li.resource-item")
            names = {item.get_attribute("data-id"): item.text for item in items}
            ids = [rid for rid, text in names.items() if path.name in text]
            if len(ids) != 1:
                raise CheckFailed(f"the dataset page lists {names}, not one {path.name}")
            return ids[0]

    def download(self, dataset: str, resource_id: str) -> Path:
        """Open the resource page, click its Download button; the downloaded file."""
        with self.step(f"downloading resource {resource_id} from its page"):
            self.open(f"/dataset/{dataset}/resource/{resource_id}")
            self.shot("resource-page")
            before = set(self.downloads.iterdir())
            href = self.css("a.btn.resource-url-analytics").get_attribute("href")
            self.click("a.btn.resource-url-analytics")

            page = self.driver.current_url

            def finished() -> Path | None:
                new = [p for p in set(self.downloads.iterdir()) - before]
                done = [p for p in new if not p.name.endswith(".crdownload")]
                if not new and self.driver.current_url != page:
                    # the browser shows a page (an error) instead of downloading a file
                    text = self.css("body").text[:300]
                    raise CheckFailed(
                        f"the Download button led to {self.driver.current_url}: {text}"
                    )
                return done[0] if len(new) == 1 and done else None

            return wait_until(f"the download of {href}", finished)

    def set_public(self, dataset: str, public: bool) -> None:
        """Set the dataset's visibility in its edit form."""
        from selenium.webdriver.support.select import Select

        visibility = "public" if public else "private"
        with self.step(f"making the dataset {visibility} in its edit form"):
            self.open(f"/dataset/edit/{dataset}")
            Select(self.css("#field-private")).select_by_value("False" if public else "True")
            self.shot("edit-visibility")
            self.submit("form#dataset-edit button.btn-primary[name=save]", "/dataset/edit/")
            self.shot(f"dataset-{visibility}")


# --- the walkthrough ----------------------------------------------------------------------


def step(text: str) -> None:
    print(f"\n\033[1m--> {text}\033[0m", flush=True)


def show(label: str, value: object) -> None:
    print(f"    {label:<24} {value}", flush=True)


def check(ok: bool, label: str, value: object, problem: str) -> None:
    show(label, f"{value}  {'OK' if ok else 'WRONG'}")
    if not ok:
        raise CheckFailed(problem)


def wait_for_jobs(resource_id: str, kinds: Iterable[str], timeout: float = JOB_TIMEOUT) -> None:
    """Wait until the resource's depot jobs finished; CheckFailed with the error of a failed one."""
    from ckan.lib.redis import connect_to_redis
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    from ckanext.dcor_depot.jobs.queue import job_id

    for kind in kinds:
        jid = job_id(kind, resource_id)

        def status(jid=jid):
            try:
                job = Job.fetch(jid, connection=connect_to_redis())
            except NoSuchJobError:
                return None  # not queued yet (queued when the upload's transaction commits)
            state = job.get_status()
            if state in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                result = job.latest_result()
                raise CheckFailed(f"job {jid} {state}: {result.exc_string if result else ''}")
            return job if state == JobStatus.FINISHED else None

        started = time.monotonic()
        job = wait_until(f"job {jid}", status, timeout)
        show(kind, f"done in {time.monotonic() - started:.1f} s: {job.return_value()}")


def anonymous_status(url: str) -> int:
    """HTTP status of a GET without credentials (the body is not read)."""
    with http.get(url, stream=True, timeout=60) as answer:
        return answer.status_code


def walkthrough(args: argparse.Namespace) -> None:
    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot import config, placement
    from ckanext.dcor_depot.model import ckan_rows
    from ckanext.dcor_depot.storage.s3 import sha256_of_file

    store = config.object_store()
    if store is None:
        raise CheckFailed("dcor_object_store.endpoint_url is not set in the demo's ini")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    admin = {"ignore_auth": True, "user": args.user}

    step(f"Circle '{DEMO_CIRCLE}' and a new private dataset (as the sysadmin {args.user})")
    try:
        circle = tk.get_action("organization_show")(dict(admin), {"id": DEMO_CIRCLE})
    except tk.ObjectNotFound:
        circle = tk.get_action("organization_create")(
            dict(admin), {"name": DEMO_CIRCLE, "title": "Demo circle"}
        )
    dataset = tk.get_action("package_create")(
        dict(admin),
        {
            "name": f"demo-{run}",
            "title": f"Demo measurement {run}",
            "owner_org": circle["id"],
            "private": True,
            "license_id": "CC-BY-4.0",
            "notes": "Created by scripts/demo.sh",
        },
    )
    show("dataset", f"{args.url}/dataset/{dataset['name']} (private)")
    path = write_rtdc(out / f"cells-{run}.rtdc", events=args.events, images=True)
    local_sha256 = sha256_of_file(path)
    show("generated file", f"{path} ({path.stat().st_size:,} bytes)")
    show("its SHA-256", local_sha256)

    screenshots = out / f"screenshots-{run}"
    with Browser(args.url, screenshots) as browser:
        step("Headless Chromium: log in, upload the file through the 'Add data' form")
        browser.log_in(args.user, Path(args.password_file).read_text().strip())
        rid = browser.upload(dataset["name"], path)
        show("resource", f"{args.url}/dataset/{dataset['name']}/resource/{rid}")

        step("Waiting for the depot's jobs (RQ workers on dcor-converge, dcor-short, dcor-normal)")
        wait_for_jobs(rid, ("file",))

        step("Where the file lives now")
        resource = ckan_rows.show_resource(rid)
        link = placement.ckan_path(rid)
        target = link.resolve()
        check(link.is_symlink(), "CKAN's path", link, f"{link} is not a symlink")
        check(
            target.is_relative_to(config.depots_path().resolve()),
            "-> depot path",
            target,
            f"the symlink does not lead into {config.depots_path()}",
        )
        depot_sha256 = sha256_of_file(target)
        check(
            depot_sha256 == local_sha256,
            "depot file SHA-256",
            depot_sha256,
            "the depot file differs from the uploaded file",
        )
        bucket, key = placement.object_location(store, circle["id"], rid)
        show("S3 bucket", bucket)
        show("S3 key", key)
        s3_sha256 = store.object_sha256(bucket, key, trust_metadata=False)
        check(
            s3_sha256 == local_sha256,
            "S3 object SHA-256",
            s3_sha256,
            "the S3 object's bytes differ from the uploaded file",
        )
        check(
            resource.get("sha256") == local_sha256,
            "recorded sha256",
            resource.get("sha256"),
            "the resource's sha256 field is not the file's",
        )
        show(
            "DC metadata",
            ", ".join(
                f"{k}={v}" for k, v in sorted(resource.items()) if k.startswith("dc:experiment")
            )
            or "none",
        )

        step("Downloading through the resource page's Download button (logged in)")
        downloaded = browser.download(dataset["name"], rid)
        got = sha256_of_file(downloaded)
        downloaded.unlink()
        check(got == local_sha256, "downloaded SHA-256", got, "the download differs")

        url = store.object_url(bucket, key)
        step("Anonymous GET while the dataset is private")
        show("S3 object URL", url)
        status = anonymous_status(url)
        check(
            status == 403,
            "-> S3 answers",
            f"HTTP {status} (refused)",
            "an anonymous user can read the object of a private dataset",
        )
        show("CKAN download URL", resource["url"])
        status = anonymous_status(resource["url"])
        check(
            status == 403,
            "-> CKAN answers",
            f"HTTP {status} (refused)",
            "CKAN gives an anonymous user the file of a private dataset",
        )

        step("Making the dataset public in its edit form")
        browser.set_public(dataset["name"], True)
    shown = tk.get_action("package_show")(dict(admin), {"id": dataset["id"]})
    check(shown["private"] is False, "dataset", "public", "the dataset is still private")
    wait_until("the object tagged public", lambda: store.visibility(bucket, key), JOB_TIMEOUT)
    show("S3 object", "tagged public=true (convergence job)")

    step("Anonymous GET now that the dataset is public")
    with http.get(url, stream=True, timeout=60) as answer:
        check(
            answer.status_code == 200,
            "-> S3 answers",
            f"HTTP {answer.status_code}",
            "the object of a public dataset is not readable anonymously",
        )
        got = sha256_of(answer.iter_content(4 << 20))
    check(got == local_sha256, "its bytes' SHA-256", got, "anonymous GET returned other bytes")
    status = anonymous_status(resource["url"])
    check(
        status == 200,
        "CKAN download URL",
        f"HTTP {status}",
        "CKAN refuses an anonymous user the file of a public dataset",
    )
    show("screenshots", screenshots)
    dcoraid_walkthrough(args, admin, circle, store, out, run)


def dcoraid_walkthrough(args, admin: dict, circle: dict, store, out: Path, run: str) -> None:
    """The same kind of file with DCOR-Aid, DCOR's own client (plugin dcor_depot_dcoraid):
    its dataset creation, upload job and download job, unmodified."""
    import ckan.plugins.toolkit as tk
    from dcoraid.api import CKANAPI, dataset_create
    from dcoraid.download.job import DownloadJob
    from dcoraid.upload.job import UploadJob

    from ckanext.dcor_depot import placement
    from ckanext.dcor_depot.storage.s3 import sha256_of_file

    step("DCOR-Aid: a new draft dataset, its upload job, its download job (API token)")
    token = tk.get_action("api_token_create")(
        dict(admin), {"user": args.user, "name": f"demo-dcoraid-{run}"}
    )
    os.environ["REQUESTS_CA_BUNDLE"] = store_ca_bundle() or ""  # its PUTs to the store
    api = CKANAPI(args.url, api_key=token["token"], caching=False)
    try:
        dataset = dataset_create(
            {
                "title": f"DCOR-Aid upload {run}",
                "authors": "Demo",
                "license_id": "CC-BY-4.0",
                "private": True,
                "owner_org": circle["id"],
            },
            api=api,
        )
        show("dataset", f"{args.url}/dataset/{dataset['name']} ({dataset['state']})")
        path = write_rtdc(out / f"dcoraid-{run}.rtdc", events=args.events // 4)
        job = UploadJob(api, dataset["id"], [path], cache_dir=out / f"dcoraid-cache-{run}")
        job.task_compress_resources()
        job.task_upload_resources()
        if job.state != "online":
            raise CheckFailed(f"DCOR-Aid's upload: {job.state}: {job.traceback}")
        rid = api.get("package_show", id=dataset["id"])["resources"][0]["id"]
        wait_for_jobs(rid, ("s3-sha256",))
        job.task_verify_resources()
        check(job.state == "done", "DCOR-Aid upload job", job.state, str(job.traceback))
        sent = Path(job.paths[0])
        local_sha256 = sha256_of_file(sent)
        bucket, key = placement.object_location(store, circle["id"], rid)
        show("S3 bucket", bucket)
        show("S3 key", key)
        s3_sha256 = store.object_sha256(bucket, key, trust_metadata=False)
        check(s3_sha256 == local_sha256, "S3 object SHA-256", s3_sha256, "other bytes in S3")
        state = api.get("package_show", id=dataset["id"])["state"]
        check(state == "active", "dataset", state, "DCOR-Aid did not activate the dataset")
        download = DownloadJob(api, rid, out)
        download.task_download_resource()
        download.task_verify_resource()
        check(download.state == "done", "DCOR-Aid download job", download.state, "")
        got = sha256_of_file(download.path)
        check(got == local_sha256, "downloaded SHA-256", got, "the download differs")
        show("downloaded to", download.path)
    finally:
        tk.get_action("api_token_revoke")(dict(admin), {"token": token["token"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ini", required=True, help="the demo site's CKAN ini")
    parser.add_argument("--url", required=True, help="the site's URL (ckan.site_url)")
    parser.add_argument("--user", required=True, help="a sysadmin's user name")
    parser.add_argument("--password-file", required=True, help="file holding its password")
    parser.add_argument("--out", required=True, help="folder for the file and screenshots")
    parser.add_argument("--events", type=int, default=2000, help="events in the .rtdc file")
    args = parser.parse_args(argv)

    from ckan.cli import load_config
    from ckan.config.middleware import make_app

    app = make_app(load_config(args.ini))
    logging.getLogger("ckanext").setLevel(logging.WARNING)  # the site's own log says enough
    try:
        with app._wsgi_app.test_request_context():
            walkthrough(args)
    except CheckFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
