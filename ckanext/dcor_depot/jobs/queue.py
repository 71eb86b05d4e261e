"""Job plumbing: which jobs a resource or dataset gets, on which queue, under which id.

Job ids are derived from the resource (or dataset) id and the job's kind, so
a resource never has the same job waiting twice. The S3 upload waits for the
symlink job and the DC metadata job for the upload (RQ dependencies that
also resolve when the job waited for fails: one broken step never blocks
the others for good).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import redis
import sqlalchemy as sa
from ckan.lib.redis import connect_to_redis
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus

from .. import config, records
from .backup import backup_resource
from .checksum import record_object_sha256
from .dc_metadata import record_dc_metadata
from .symlink import symlink_resource
from .upload import upload_resource
from .visibility import apply_visibility

log = logging.getLogger(__name__)

SHORT = "dcor-short"
NORMAL = "dcor-normal"
#: The queues a worker for the depot listens on, most urgent first.
QUEUES = (SHORT, NORMAL)

#: The jobs of a resource's file by kind (the kind names the job id); each
#: takes the resource id. A file uploaded to CKAN gets the first three, in
#: this order; one uploaded straight to S3 the last three.
RESOURCE_JOBS: dict[str, Callable[[str], str]] = {
    "symlink": symlink_resource,
    "s3-upload": upload_resource,
    "dc-metadata": record_dc_metadata,
    "s3-sha256": record_object_sha256,
    "backup": backup_resource,
}

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
    allow_failure: bool = True,
) -> str:
    """Queue ``fn(object_id)`` unless the same job is already waiting (or running).

    ``skip_running=False`` queues it again while it runs: for jobs that read
    the state when they start, so a change during the run is not missed.
    ``allow_failure=False``: the job runs only if ``depends_on`` succeeded.
    """
    jid = job_id(kind, object_id)
    # one process at a time decides whether to queue this job id; with short
    # timeouts, so that an unreachable Redis fails fast instead of hanging
    guard = f"{jid}:enqueue"
    if not _redis_with_timeouts().set(guard, "1", nx=True, ex=30):
        return jid
    try:
        waiting = _WAITING | ({JobStatus.STARTED} if skip_running else set())
        try:
            if Job.fetch(jid, connection=connect_to_redis()).get_status() in waiting:
                return jid
        except NoSuchJobError:
            pass
        rq_kwargs: dict[str, Any] = {"job_id": jid, "timeout": config.job_timeout(queue)}
        if depends_on:
            rq_kwargs["depends_on"] = Dependency(jobs=[depends_on], allow_failure=allow_failure)
        tk.enqueue_job(
            fn, [object_id], title=f"dcor_depot {kind}", queue=queue, rq_kwargs=rq_kwargs
        )
        return jid
    finally:
        _redis_with_timeouts().delete(guard)


@functools.lru_cache(maxsize=1)
def _redis_with_timeouts() -> redis.Redis:
    return redis.Redis.from_url(
        tk.config["ckan.redis.url"], socket_connect_timeout=2, socket_timeout=5
    )


def enqueue_resource_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The jobs of a newly uploaded file: symlink, S3 upload, DC metadata."""
    rid = resource["id"]
    last = enqueue(RESOURCE_JOBS["symlink"], "symlink", rid, SHORT)
    jobs = [last]
    if config.s3_settings() is not None:
        last = enqueue(RESOURCE_JOBS["s3-upload"], "s3-upload", rid, NORMAL, depends_on=last)
        jobs.append(last)
    if records.is_dc_file(resource):
        dc = enqueue(RESOURCE_JOBS["dc-metadata"], "dc-metadata", rid, NORMAL, depends_on=last)
        jobs.append(dc)
    return jobs


def enqueue_registered_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The jobs of a file uploaded straight to S3: SHA-256 and visibility, DC metadata, backup."""
    rid = resource["id"]
    checksum = enqueue(RESOURCE_JOBS["s3-sha256"], "s3-sha256", rid, NORMAL)
    jobs = [checksum]
    if records.is_dc_file(resource):
        jobs.append(enqueue(RESOURCE_JOBS["dc-metadata"], "dc-metadata", rid, NORMAL))
    if config.local_backup_location() is not None:
        jobs.append(
            enqueue(RESOURCE_JOBS["backup"], "backup", rid, NORMAL, checksum, allow_failure=False)
        )
    return jobs


def enqueue_visibility(package_id: str) -> str | None:
    if config.s3_settings() is None:
        return None
    return enqueue(apply_visibility, "visibility", package_id, SHORT, skip_running=False)


def after_commit(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` once CKAN's current transaction has committed.

    CKAN calls the plugin's hooks before it commits: a job queued right away
    could run on the state before the change (and not find a new resource).
    Dropped when the transaction rolls back. A Redis error is logged, never
    raised: the user's change stands, ``run-jobs-dcor-depot`` catches up.
    """
    model.Session().info.setdefault(_PENDING, []).append((fn, args))


_PENDING = "dcor_depot_jobs_after_commit"


def queue_or_log(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)``; log a Redis error instead of raising it."""
    try:
        fn(*args)
    except redis.exceptions.RedisError as exc:
        log.warning(
            "dcor_depot: could not queue %s for %s (%s); the change itself is saved. "
            "`ckan run-jobs-dcor-depot` will catch up",
            fn.__name__,
            args[0]["id"] if isinstance(args[0], Mapping) else args[0],
            exc,
        )


def _run_pending(session) -> None:
    for fn, args in session.info.pop(_PENDING, []):
        queue_or_log(fn, *args)


def _drop_pending(session) -> None:
    session.info.pop(_PENDING, None)


if not sa.event.contains(model.Session, "after_commit", _run_pending):
    sa.event.listen(model.Session, "after_commit", _run_pending)
    sa.event.listen(model.Session, "after_rollback", _drop_pending)
