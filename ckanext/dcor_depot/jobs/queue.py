"""Job plumbing: which jobs a resource or dataset gets, on which queue, under which id.

Job ids are derived from the resource (or dataset) id and the job's kind, so
a resource never has the same job waiting twice. The S3 upload waits for the
symlink job and the DC metadata job for the upload (RQ dependencies that
also resolve when the job waited for fails: one broken step never blocks
the others for good).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import ckan.plugins.toolkit as tk
from ckan.lib.redis import connect_to_redis
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus

from .. import config
from . import site
from .dc_metadata import record_dc_metadata
from .symlink import symlink_resource
from .upload import upload_resource
from .visibility import apply_visibility

log = logging.getLogger(__name__)

SHORT = "dcor-short"
NORMAL = "dcor-normal"
#: The queues a worker for the depot listens on, most urgent first.
QUEUES = (SHORT, NORMAL)

_WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def job_id(kind: str, object_id: str) -> str:
    return f"dcor-depot-{kind}-{object_id}"


def enqueue(
    fn: Callable[[str], str],
    kind: str,
    object_id: str,
    queue: str,
    depends_on: str | None = None,
    skip_running: bool = True,
) -> str:
    """Queue ``fn(object_id)`` unless the same job is already waiting (or running).

    ``skip_running=False`` queues it again while it runs: for jobs that read
    the state when they start, so a change during the run is not missed.
    """
    jid = job_id(kind, object_id)
    redis = connect_to_redis()
    # one process at a time decides whether to queue this job id
    guard = f"{jid}:enqueue"
    if not redis.set(guard, "1", nx=True, ex=30):
        return jid
    try:
        waiting = _WAITING | ({JobStatus.STARTED} if skip_running else set())
        try:
            if Job.fetch(jid, connection=redis).get_status() in waiting:
                return jid
        except NoSuchJobError:
            pass
        rq_kwargs: dict[str, Any] = {"job_id": jid, "timeout": config.job_timeout(queue)}
        if depends_on:
            rq_kwargs["depends_on"] = Dependency(jobs=[depends_on], allow_failure=True)
        tk.enqueue_job(
            fn, [object_id], title=f"dcor_depot {kind}", queue=queue, rq_kwargs=rq_kwargs
        )
        return jid
    finally:
        redis.delete(guard)


def enqueue_resource_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The jobs of a newly uploaded file: symlink, S3 upload, DC metadata."""
    rid = resource["id"]
    last = enqueue(symlink_resource, "symlink", rid, SHORT)
    jobs = [last]
    if config.s3_settings() is not None:
        last = enqueue(upload_resource, "s3-upload", rid, NORMAL, depends_on=last)
        jobs.append(last)
    if site.is_dc_file(resource):
        jobs.append(enqueue(record_dc_metadata, "dc-metadata", rid, NORMAL, depends_on=last))
    return jobs


def enqueue_visibility(package_id: str) -> str | None:
    if config.s3_settings() is None:
        return None
    return enqueue(apply_visibility, "visibility", package_id, SHORT, skip_running=False)
