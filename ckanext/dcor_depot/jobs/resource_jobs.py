"""The jobs of a resource's file, in order, and queueing them when a file arrives.

A file uploaded to CKAN gets one job, ``file``, that runs its steps (symlink,
S3 upload, DC metadata) one after the other in one work horse: CKAN's worker
loads its environment once per job, not once per step. A step that fails does
not stop the next ones (one broken step never blocks the others); the job then
fails, naming each failed step. Each step is a job of its own for
``run-jobs-dcor-depot``, idempotent, and may run again at any time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ckan.model as model
from rq.timeouts import BaseTimeoutException

from .. import config, errors, resource_fields

# the steps' modules, imported here so that the layers' linter sees what this module
# runs (their functions come from the table of jobs)
from . import backup, checksum, dc_metadata, queue, symlink, upload  # noqa: F401
from .queue import after_commit, enqueue, transaction_list

log = logging.getLogger(__name__)

#: The jobs of a resource's file by kind, from the table of jobs (``queue.JOBS``); each
#: takes the resource id. A file uploaded to CKAN gets the first three, in this order;
#: one uploaded straight to S3 the last three.
RESOURCE_JOBS: dict[str, Callable[[str], str]] = {
    kind: queue.function(kind)
    for kind in ("symlink", "s3-upload", "dc-metadata", "s3-sha256", "backup")
}


#: The steps of a file uploaded to CKAN, in order; the S3 upload and the DC
#: metadata step each say so and do nothing when S3 is off or the file is no DC file.
FILE_STEPS = ("symlink", "s3-upload", "dc-metadata")


def run_steps(resource_id: str, kinds: Iterable[str]) -> list[str]:
    """Run these jobs of the resource in order, here; each also when one before failed.

    Returns their messages; raises :class:`errors.JobError` naming every
    step that failed and why.
    """
    done, failed = [], []
    for kind in kinds:
        try:
            done.append(RESOURCE_JOBS[kind](resource_id))
        except BaseTimeoutException:
            raise  # RQ stops the job: no further step runs past its timeout
        except Exception as exc:  # report it and go on with the next step
            model.Session.rollback()  # a failed statement would fail every later one
            if not isinstance(exc, errors.JobError):
                log.exception("resource %s: %s failed", resource_id, kind)
            failed.append(f"{kind} failed: {exc}")
    if failed:
        raise errors.JobError("; ".join(failed))
    return done


def process_file(resource_id: str) -> str:
    """The job of a file uploaded to CKAN: its steps (:data:`FILE_STEPS`) in one work horse."""
    return "; ".join(run_steps(resource_id, FILE_STEPS))


#: the files that arrived in CKAN's transaction: ``(resource fields, registered)``
_ARRIVALS = "dcor_depot_arrived_files"


def file_arrived(resource: model.Resource, registered: bool) -> None:
    """Note a file that arrives in CKAN's current transaction, whatever action (API, web
    form, nested call) brings it: written by CKAN's uploader (``logic/rules.file_uploaded``),
    or uploaded straight to S3 and registered (``logic/rules.py``). Its jobs are queued when the
    transaction commits (:func:`queue_arrivals` through :func:`queue.after_commit`, as
    for convergence), nothing when it rolls back. CKAN's ``action_succeeded`` signal
    cannot do it: it comes after the action committed, and does not say which files
    arrived."""
    arrivals = transaction_list(_ARRIVALS)
    fields = {"id": resource.id, "url": resource.url, "name": resource.name}
    arrivals.append((fields, registered))
    if len(arrivals) == 1:
        after_commit(queue_arrivals, arrivals)


def queue_arrivals(arrivals: list[tuple[dict[str, Any], bool]]) -> None:
    """Queue the jobs of each file in ``arrivals``, once each (read after the commit:
    no SQL)."""
    queued = set()
    for fields, registered in arrivals:
        if fields["id"] in queued:
            continue
        queued.add(fields["id"])
        if registered:
            enqueue_registered_jobs(fields)
        else:
            enqueue_resource_jobs(fields)


def enqueue_resource_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The job of a newly uploaded file (:func:`process_file`): on ``dcor-normal``
    when it uploads to S3, else on ``dcor-short`` (a rename and a metadata read)."""
    return [enqueue("file", resource["id"])]


def enqueue_registered_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The jobs of a file uploaded straight to S3: SHA-256 and visibility, DC metadata, backup."""
    rid = resource["id"]
    sha256_job = enqueue("s3-sha256", rid)
    jobs = [sha256_job]
    if resource_fields.is_dc_file(resource):
        jobs.append(enqueue("dc-metadata", rid))
    if config.local_backup_location() is not None:
        jobs.append(enqueue("backup", rid, sha256_job, allow_failure=False))
    return jobs
