"""Fixtures shared by the test suite: real files, the real object store, clean buckets."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import ckan.model as model
import pytest
import requests
from ckan.lib.redis import connect_to_redis
from ckan.tests import factories
from rq.job import Job

from ckanext.dcor_depot import config
from ckanext.dcor_depot.jobs.queue import QUEUES
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore, circle_bucket_prefix, object_key

REPO_DIR = Path(__file__).parent.parent


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def corrupt_object(store, bucket: str, resource: dict) -> None:
    """Other bytes of the same size behind the resource's object, its metadata kept:
    what bit rot looks like to everything but a full read."""
    store.client.put_object(
        Bucket=bucket,
        Key=object_key("resource", resource["id"]),
        Body=os.urandom(resource["size"]),
        Metadata={"sha256": resource["sha256"]},
    )


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


def appended(cli, dataset: dict | str, path) -> dict:
    """The resource ``ckan append-resource PATH DATASET`` adds (a dataset or its id)."""
    from ckan.tests import helpers

    from ckanext.dcor_depot.cli import append_resource

    dataset_id = dataset["id"] if isinstance(dataset, dict) else dataset
    result = cli.invoke(append_resource, [str(path), dataset_id])
    assert result.exit_code == 0, result.output
    return helpers.call_action("package_show", id=dataset_id)["resources"][-1]


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


def chosen_before(package_id: str, resource_id: str) -> None:
    """A link resource of ``package_id`` with the id ``resource_id``, as a user could
    choose before the extension refused ids that are not random UUIDs (version 4)."""
    from ckan.tests import helpers

    planted = helpers.call_action("resource_create", package_id=package_id, url="x:")
    model.Session.query(model.Resource).filter_by(id=planted["id"]).update({"id": resource_id})
    model.Session.commit()


#: The folders of test.ini that the tests fill; emptied when a run starts.
_TEST_FOLDERS = (
    "ckan.storage_path",
    "ckanext.dcor_depot.depots_path",
    "ckanext.dcor_depot.tmp_dir",
)


@pytest.fixture(scope="session", autouse=True)
def empty_test_folders():
    """Each run starts with empty storage, depots and tmp folders: the files of
    earlier runs, which no database row names any more, would pile up (GiBs).
    Only folders under /tmp are touched, whatever the ini says."""
    import ckan.plugins.toolkit as tk

    for key in _TEST_FOLDERS:
        folder = Path(tk.config.get(key) or "/nonexistent")
        if folder.is_relative_to("/tmp") and folder != Path("/tmp"):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clean_db(reset_db, migrate_db_for, with_plugins):
    """CKAN's clean_db, then the plugin's own migrations (its table dcor_depot_file)."""
    reset_db()
    migrate_db_for("dcor_depot")


#: Redis keys a test leaves behind: jobs, their results and registries, the depot's markers
_LEFT_BEHIND = (
    "rq:job:*",
    "rq:results:*",
    "rq:finished:*",
    "rq:failed:*",
    "rq:deferred:*",
    "rq:scheduled:*",
    "rq:canceled:*",
    "dcor_depot:*",
)


@pytest.fixture
def clean_queues(reset_queues):
    """CKAN's clean_queues, and what earlier tests' jobs left in Redis.

    RQ keeps ended jobs for a while (failed ones for a year): the workers'
    pool waits by scanning them, and fingerprints or markers of a dataset
    of an earlier test would describe a dataset that no longer exists.
    """
    reset_queues()
    redis = connect_to_redis()
    for pattern in _LEFT_BEHIND:
        keys = list(redis.scan_iter(match=pattern, count=1000))
        if keys:
            redis.delete(*keys)


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
#: HTTP as a user's client: the object store's (private) CA trusted, certificates verified.
http = demo.http


@pytest.fixture
def rtdc_file(tmp_path):
    """Factory: a real, valid .rtdc file written with dclab."""

    def make(events: int = 200, name: str = "measurement.rtdc", fluorescence=False) -> Path:
        return demo.write_rtdc(tmp_path / name, events, fluorescence=fluorescence)

    return make


#: The ckan command of the virtualenv running the tests.
CKAN = str(Path(sys.executable).parent / "ckan")
#: The ini file of the test run (pytest's --ckan-ini): scripts/test.sh writes one per CKAN
#: version (its own database, Redis database, search core, folders and bucket prefix).
TEST_INI = os.environ.get("DCOR_TEST_INI") or str(REPO_DIR / "test.ini")


@pytest.fixture
def clean_circles(store):
    """Empty and remove the tests' circle buckets after the test."""
    yield
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    for name in store.list_buckets(prefix=prefix):
        _remove_bucket(store, name)


def _remove_bucket(store: ObjectStore, name: str) -> None:
    client = store.client
    if store.list_buckets(prefix=name) and not _exists(store, name):
        client.create_bucket(Bucket=name)  # RGW lists a bucket a racing delete left half-done
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=name, Key=version["Key"], VersionId=version["VersionId"])
    client.delete_bucket(Bucket=name)


def _exists(store: ObjectStore, bucket: str) -> bool:
    try:
        store.client.head_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - 404 or 403: not a bucket to empty
        return False
    return True


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


def worker_command(ini: str = TEST_INI, burst: bool = True, ckan_own: bool = False) -> list[str]:
    """A real RQ worker on the depot's queues (with ``burst``: it stops when they are empty):
    the README's ``ckan dcor-depot-worker``, or with ``ckan_own`` ``ckan jobs worker``."""
    command = ["jobs", "worker"] if ckan_own else ["dcor-depot-worker"]
    return [CKAN, "-c", ini, *command, *(["--burst"] if burst else []), *QUEUES]


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """SIGKILL (or ``sig``) a process and all its descendants at once.

    RQ's work horse (the process that runs a job) leaves its worker's process
    group (setsid/setpgrp): killing the group would let the job run on.
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    victims, todo = [], [pid]
    while todo:
        victims.append(todo.pop())
        todo += children.get(victims[-1], [])
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, sig)


def release_scheduler_locks() -> None:
    """After a worker with a scheduler was killed (SIGKILL): its scheduler's locks stay for
    a minute, and a worker started meanwhile would queue no scheduled job."""
    from ckan.lib.jobs import get_queue
    from rq.scheduler import RQScheduler

    for name in QUEUES:
        connect_to_redis().delete(RQScheduler.get_locking_key(get_queue(name).name))


def stop_at(point: str, marker: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that stops itself at ``point`` (``part-file``,
    ``s3-part``: see tests/stop_hook/sitecustomize.py) and then writes its pid to
    ``marker``; :func:`wait_until_stopped` waits for that."""
    env = dict(os.environ if env is None else env)
    hook = str(REPO_DIR / "tests" / "stop_hook")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [hook, env.get("PYTHONPATH")]))
    return {**env, "DCOR_TEST_STOP_AT": point, "DCOR_TEST_STOPPED": str(marker)}


def wait_until_stopped(marker: Path, proc: subprocess.Popen, what: str, timeout=120) -> int:
    """The pid of the process (``proc`` or one of its children) that stopped itself as
    :func:`stop_at` said, once it is stopped."""
    deadline = time.monotonic() + timeout
    while True:
        if marker.exists() and marker.read_text():
            pid = int(marker.read_text())
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "T":
                return pid
        assert proc.poll() is None, f"{what}: the process ended (exit {proc.returncode})"
        assert time.monotonic() < deadline, f"{what}: never reached within {timeout} s"
        time.sleep(0.02)  # polling for another process to stop


class Workers:
    """Long-running RQ workers (real processes) and a way to wait until their work is done."""

    def __init__(self, count: int, ini: str = TEST_INI, command: list[str] | None = None):
        """``command``: how to start each worker (default: ``worker_command(ini)``)."""
        command = command or worker_command(ini, burst=False)
        self.logs = [tempfile.TemporaryFile("w+") for _ in range(count)]
        # a worker that does not stop shows where each of its processes was (see stop())
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        self.procs = [
            subprocess.Popen(command, stdout=log, stderr=log, text=True, env=env)
            for log in self.logs
        ]
        self.failed_before = failed_jobs()
        #: jobs queued before (by earlier runs) are not this pool's
        self.started = datetime.datetime.now(datetime.timezone.utc)
        deadline = time.monotonic() + 120
        while len(self._started()) < count:
            assert time.monotonic() < deadline, "the RQ workers did not start: " + self.log()
            time.sleep(0.1)  # polling for the workers to register

    def _started(self) -> list:
        from rq import Worker

        return [w for w in Worker.all(connection=connect_to_redis()) if w.pid in self.pids]

    @property
    def pids(self) -> set[int]:
        return {proc.pid for proc in self.procs}

    def drain(self, timeout: float = 300, failures_allowed: bool = False) -> list[str]:
        """Wait until no depot job waits or runs; return the failures since the last drain."""
        from ckan.lib.jobs import get_queue

        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:  # twice in a row: a job may queue the next one as it ends
            if time.monotonic() >= deadline:
                raise AssertionError("the depot's jobs did not end: " + self.log())
            queues = list(map(get_queue, QUEUES))
            busy = _unfinished(queues) or any(
                q.count or q.started_job_registry.count or _deferred(q) or _scheduled_soon(q)
                for q in queues
            )
            quiet = 0 if busy else quiet + 1
            time.sleep(0.05)  # polling for the queues to empty
        failed = failed_jobs()
        problems = job_failures(failed - self.failed_before, since=self.started)
        self.failed_before = failed
        assert failures_allowed or not problems, problems
        return problems

    @contextlib.contextmanager
    def paused(self):
        """The workers take no job (SIGSTOP), as if they were busy elsewhere."""
        for proc in self.procs:
            os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for proc in self.procs:
                os.kill(proc.pid, signal.SIGCONT)

    def log(self, tail: int | None = 2000) -> str:
        """The workers' logs (the last ``tail`` characters of each; None: all of them)."""
        text = []
        for log in self.logs:
            log.seek(0)
            text.append(log.read()[-tail if tail else 0 :])
        return "\n".join(text)

    def stop(self) -> None:
        """SIGTERM, as an operator stops a worker; a worker that has not ended 60 s later
        fails the test with the Python stack of each of its processes (SIGABRT)."""
        for proc in self.procs:
            proc.terminate()
        stuck = []
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stuck.append(proc)
        for proc in stuck:
            kill_tree(proc.pid, signal.SIGABRT)  # faulthandler writes the stacks to the log
            proc.wait(timeout=30)
        if stuck:
            raise AssertionError(
                "a worker did not stop within 60 s of SIGTERM:\n" + self.log(12000)
            )


def failed_jobs() -> set[str]:
    """The ids of the jobs in the failed registries of the depot's queues."""
    from ckan.lib.jobs import get_queue

    return {j for name in QUEUES for j in get_queue(name).failed_job_registry.get_job_ids()}


def job_failures(job_ids, since: datetime.datetime | None = None) -> list[str]:
    """For each of these failed jobs (queued ``since``): its id and the last line of its
    traceback."""
    problems = []
    for job in Job.fetch_many(sorted(job_ids), connection=connect_to_redis()):
        if job is None or not job.enqueued_at:
            continue
        if since and job.enqueued_at.replace(tzinfo=datetime.timezone.utc) < since:
            continue
        problems.append(f"{job.id}: {(job.exc_info or '').strip().splitlines()[-1:]}")
    return problems


def _unfinished(queues) -> bool:
    """A job of the depot's queues that is queued or running by its own status.

    RQ 1.16 (CKAN 2.11) takes a job off its queue before it lists it as
    started, in the work horse: in between only the job's status tells.
    """
    redis = connect_to_redis()
    names = {q.name for q in queues}
    prefix = Job.redis_job_namespace_prefix
    keys = [
        key
        for key in redis.scan_iter(match=f"{prefix}*", count=1000)
        if b":" not in key[len(prefix) :]  # not a job's dependents or dependencies
    ]
    pipeline = redis.pipeline(transaction=False)
    for key in keys:
        pipeline.hmget(key, "status", "origin")
    return any(
        origin and origin.decode() in names and status in (b"queued", b"started")
        for status, origin in pipeline.execute()
    )


def _scheduled_soon(queue) -> bool:
    """A job scheduled to run within a few seconds (a circle's turn that the worker's
    scheduler queues at its time, within a second of it). Later ones (a turn at the
    end of a dead holder's lease) are what a test waits for itself."""
    soon = time.time() + SCHEDULED_SOON
    redis = connect_to_redis()
    ids = redis.zrangebyscore(queue.scheduled_job_registry.key, "-inf", soon)
    # an id whose job is gone (an earlier test emptied the queues) is never queued
    ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    return any(job is not None for job in Job.fetch_many(ids, connection=redis)) if ids else False


#: Seconds ahead in which :meth:`Workers.drain` waits for a scheduled job.
SCHEDULED_SOON = 3


def _deferred(queue) -> int:
    """Jobs that still wait for another job that has not ended.

    The registry also keeps jobs whose dependency was emptied away or failed
    (RQ leaves them deferred for good): those wait for nothing.
    """
    redis = connect_to_redis()
    ids = queue.deferred_job_registry.get_job_ids()
    waiting = 0
    for job in Job.fetch_many(ids, connection=redis) if ids else []:
        if job is None or job.get_status() != "deferred":
            continue
        # RQ 1.16 (CKAN 2.11) gives the ids as bytes
        ids = [i.decode() if isinstance(i, bytes) else i for i in job.dependency_ids]
        for dependency in Job.fetch_many(ids, connection=redis):
            if dependency is not None and dependency.get_status() in _UNFINISHED:
                waiting += 1
                break
    return waiting


_UNFINISHED = {"queued", "started", "deferred", "scheduled"}


@pytest.fixture(scope="module")
def workers():
    """Two long-running RQ workers on the depot's queues for the tests of a module."""
    pool = Workers(2)
    yield pool
    pool.stop()


class Forker:
    """CKAN's commands forked from one process that loaded CKAN once (tests/forker.py): a
    command starts in a fraction of a second instead of 2 s of CPU."""

    def __init__(self, *mode: str):
        script = str(REPO_DIR / "tests" / "forker.py")
        self.proc = subprocess.Popen(
            [sys.executable, script, *mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self.proc.stdout.readline()
        assert ready == "ready\n", f"the forker ({mode[0]}) did not start: {ready!r}"

    def run(self, **request) -> int:
        """Fork what ``request`` says; the forked process's exit status."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def forkers():
    """The forkers of the run, each started on first use: ``forkers("worker", TEST_INI)``
    (burst workers of the run's ini), ``forkers("command")`` (any ``ckan`` command)."""
    started: dict[tuple[str, ...], Forker] = {}

    def get(*mode: str) -> Forker:
        if mode not in started:
            started[mode] = Forker(*mode)
        return started[mode]

    yield get
    for forker in started.values():
        forker.stop()


def _new_file(folder: Path, suffix: str) -> Path:
    return Path(tempfile.mkstemp(dir=folder, suffix=suffix)[1])


@pytest.fixture
def run_ckan(forkers, tmp_path):
    """Factory: ``ckan -c INI ARGS`` as a separate process would run it (forked: see
    :class:`Forker`), in this environment (default: the test's); its exit status and
    output, as :func:`subprocess.run` gives them."""

    def run(
        ini: str | Path, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        stdout, stderr = _new_file(tmp_path, ".out"), _new_file(tmp_path, ".err")
        args = ("-c", str(ini), *args)
        status = forkers("command").run(
            args=args, stdout=str(stdout), stderr=str(stderr), env=dict(env or os.environ)
        )
        return subprocess.CompletedProcess(
            [CKAN, *args], status, stdout.read_text(), stderr.read_text()
        )

    return run


@pytest.fixture
def run_worker(forkers, run_ckan, tmp_path):
    """Factory: run a burst worker in its own process until the depot's queues are empty;
    assert that it and every job it ran ended well (a burst worker exits 0 when a job
    fails). With ``failures_allowed`` the jobs that failed are returned instead.

    With the run's ini it is forked from a process with CKAN's environment loaded;
    with another ini it is ``ckan -c INI dcor-depot-worker --burst`` (see :class:`Forker`)."""

    def run(ini: str = TEST_INI, failures_allowed: bool = False) -> list[str]:
        before = failed_jobs()
        if ini == TEST_INI:
            log = _new_file(tmp_path, ".log")
            status = forkers("worker", TEST_INI).run(log=str(log))
            output = log.read_text()
        else:
            done = run_ckan(*worker_command(ini)[2:])
            status, output = done.returncode, done.stderr
        assert status == 0, output[-3000:]
        problems = job_failures(failed_jobs() - before)
        assert failures_allowed or not problems, (problems, output[-3000:])
        return problems

    return run


#: CKAN's web app for each set of ``ckan_config`` marks, with its request context for
#: ``url_for`` outside a request (see the ``app`` fixture)
_APPS: dict[str, tuple] = {}


@pytest.fixture
def app(make_app, with_plugins, request):
    """CKAN's ``app`` fixture, its web app built once per set of ``ckan_config`` marks
    instead of for each test (0.2-0.3 s of CPU each, in a third of the tests). Each test
    gets a client of its own: no cookie of another test. The app reads CKAN's config at
    each request, as the extension does; what it fixes when it is built (blueprints,
    template folders, middleware) comes from the ini, the plugins and the marks."""
    from ckan.common import config as ckan_config
    from ckan.config import middleware
    from ckan.tests.helpers import CKANTestApp

    marks = repr([mark.args for mark in request.node.iter_markers("ckan_config")])
    if marks not in _APPS:
        _APPS[marks] = make_app().app, middleware._internal_test_request_context
    web_app, context = _APPS[marks]
    ckan_config["testing"] = True  # as CKAN's make_app
    middleware._internal_test_request_context = context
    return CKANTestApp(web_app)


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


class Forwarder:
    """Another port of localhost that leads to a port of 127.0.0.1: a second address of
    one server, which can be closed (an address only the users' network reaches)."""

    def __init__(self, target_port: int, port: int = 0, cut_after: int | None = None):
        """``cut_after``: the first connection is cut (both ways) once the client has sent
        that many bytes through it: a transfer interrupted by the network."""
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.cut_after = cut_after
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return  # closed
            self.sockets += [client, upstream]
            limit, self.cut_after = self.cut_after, None
            pipes = ((client, upstream, limit), (upstream, client, None))
            for source, sink, cut in pipes:
                threading.Thread(target=self._pipe, args=(source, sink, cut), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, cut: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if cut is not None and sent + len(data) >= cut:
                    sink.sendall(data[: cut - sent])
                    self.cuts += 1
                    for end in (source, sink):
                        end.shutdown(socket.SHUT_RDWR)
                    return
                sink.sendall(data)
                sent += len(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Nothing answers at the port any more, open connections included."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux): the port is free
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def forwarder():
    """Factory: a :class:`Forwarder` to a port of 127.0.0.1, closed after the test."""
    opened = []

    def start(target_port: int, port: int = 0, cut_after: int | None = None) -> Forwarder:
        opened.append(Forwarder(target_port, port, cut_after))
        return opened[-1]

    yield start
    for each in opened:
        each.close()


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
