"""Fixtures shared by the test suite: real files, the real object store, clean buckets."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ckan.model as model
import pytest
import requests
from ckan.tests import factories

from ckanext.dcor_depot import config
from ckanext.dcor_depot.jobs.queue import QUEUES
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore, circle_bucket_prefix

REPO_DIR = Path(__file__).parent.parent


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fd:
        while chunk := fd.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def object_sha256(store: ObjectStore, bucket: str, key: str) -> str:
    """SHA-256 of an object's bytes, read with plain boto3 (not the layer under test)."""
    digest = hashlib.sha256()
    body = store.client.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in body.iter_chunks(4 * MiB):
        digest.update(chunk)
    return digest.hexdigest()


def make_old(resource: dict) -> None:
    """Date a resource and its dataset back to 2020 (for ``--modified-days``)."""
    long_ago = datetime.datetime(2020, 1, 1)
    model.Session.query(model.Resource).filter_by(id=resource["id"]).update(
        {"metadata_modified": long_ago}
    )
    model.Session.query(model.Package).filter_by(id=resource["package_id"]).update(
        {"metadata_modified": long_ago}
    )
    model.Session.commit()


@pytest.fixture
def store(with_plugins) -> ObjectStore:
    """The object store configured in test.ini (services.ini): the real Ceph RGW."""
    store = config.object_store()
    assert store is not None, "no S3 endpoint configured: run `bash scripts/services.sh` first"
    return store


@pytest.fixture
def bucket(store):
    """A fresh bucket, emptied and removed after the test (also its open uploads)."""
    name = f"dcor-test-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(name)
    yield name
    _remove_bucket(store, name)


@pytest.fixture
def random_file(tmp_path):
    """Factory: a file of ``size`` random bytes, written in chunks."""

    def make(size: int, name: str = "data.bin") -> Path:
        path = tmp_path / name
        with open(path, "wb") as fd:
            remaining = size
            while remaining:
                chunk = min(remaining, 16 * MiB)
                fd.write(os.urandom(chunk))
                remaining -= chunk
        return path

    return make


def load_script(name: str):
    """A module of scripts/ (they are not a package), e.g. the demo walkthrough."""
    path = REPO_DIR / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dcor_depot_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The demo's walkthrough: its browser driver, its .rtdc generator, its anonymous GET.
demo = load_script("demo_walkthrough")
anonymous_status = demo.anonymous_status


@pytest.fixture
def rtdc_file(tmp_path):
    """Factory: a real, valid .rtdc file written with dclab."""

    def make(events: int = 200, name: str = "measurement.rtdc", fluorescence=False) -> Path:
        return demo.write_rtdc(tmp_path / name, events, fluorescence=fluorescence)

    return make


#: The ckan command of the virtualenv running the tests.
CKAN = str(Path(sys.executable).parent / "ckan")
#: The ini file of the test run (pytest's --ckan-ini).
TEST_INI = str(REPO_DIR / "test.ini")


@pytest.fixture
def clean_circles(store):
    """Empty and remove the tests' circle buckets after the test."""
    yield
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    for name in store.list_buckets(prefix=prefix):
        _remove_bucket(store, name)


def _remove_bucket(store: ObjectStore, name: str) -> None:
    client = store.client
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for obj in store.iter_objects(name):
        client.delete_object(Bucket=name, Key=obj.key)
    client.delete_bucket(Bucket=name)


def derived_ini(folder: Path, base: str = TEST_INI, name: str = "derived.ini", **options) -> Path:
    """An ini file that is ``base`` with some options changed (for a separate process)."""
    text = Path(TEST_INI).read_text()
    lines = [f"{key} = {value}" for key, value in options.items()]
    ini = folder / name
    # CKAN 2.11 reads the logging sections from the top file only
    ini.write_text(
        f"[app:main]\nuse = config:{base}\n"
        + "\n".join(lines)
        + "\n\n"
        + text[text.index("[loggers]") :]
    )
    return ini


def worker_command(ini: str = TEST_INI) -> list[str]:
    """A real RQ worker on the depot's queues that stops when they are empty."""
    return [CKAN, "-c", ini, "jobs", "worker", "--burst", *QUEUES]


@pytest.fixture
def run_worker():
    """Factory: run a burst worker in its own process; assert it ends well."""

    def run(ini: str = TEST_INI) -> str:
        proc = subprocess.run(
            worker_command(ini), capture_output=True, text=True, timeout=600, check=False
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    return run


@pytest.fixture
def api_upload(app):
    """Factory: upload a file through CKAN's API (resource_create), as ``user``."""

    def upload(user: dict, package_id: str, path: Path, name: str | None = None) -> dict:
        token = factories.APIToken(user=user["name"])["token"]
        data = {"package_id": package_id, "name": name if name is not None else path.name}
        with open(path, "rb") as fd:
            data["upload"] = (fd, path.name)
            response = app.post(
                "/api/action/resource_create",
                data=data,
                headers={"Authorization": token},
                content_type="multipart/form-data",
            )
        assert response.status_code == 200, response.body
        return response.json["result"]

    return upload


@pytest.fixture
def figshare_server():
    """A local figshare-protocol server (tests/figshare_server.py), stopped after the test."""
    from .figshare_server import FigshareServer

    server = FigshareServer().start()
    yield server
    server.stop()


@dataclasses.dataclass(frozen=True)
class CKANServer:
    url: str
    ini: str


@pytest.fixture
def ckan_server(tmp_path):
    """Factory: CKAN's web server (``ckan run``) in its own process. Stopped at the end.

    Its ini is ``ini`` with ``ckan.site_url`` set to the server's URL (the links
    on its pages lead back to it); workers should use that ini too, since a
    dataset in the search index carries the URLs of the process that indexed it.
    """
    servers: list[subprocess.Popen] = []

    def start(ini: str = TEST_INI) -> CKANServer:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        ini = str(derived_ini(tmp_path, ini, f"server-{port}.ini", **{"ckan.site_url": url}))
        log = tempfile.TemporaryFile("w+")  # a pipe could fill up and block the server
        proc = subprocess.Popen(
            [CKAN, "-c", ini, "run", "-H", "127.0.0.1", "-p", str(port), "-r", "-t"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        servers.append(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"ckan run ended: {log.read()[-3000:]}")
            try:
                if requests.get(f"{url}/api/action/status_show", timeout=5).ok:
                    return CKANServer(url, ini)
            except requests.ConnectionError:
                time.sleep(0.2)  # polling for the server to listen
        raise AssertionError("ckan run did not answer within 120 s")

    yield start
    for proc in servers:
        proc.terminate()
        proc.wait(timeout=30)
