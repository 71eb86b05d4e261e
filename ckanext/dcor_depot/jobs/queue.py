"""Job plumbing: the depot's queues, job ids, queueing once, queueing after CKAN commits.

Job ids are derived from the resource (or dataset) id and the job's kind, so
a resource never has the same job waiting twice (:func:`enqueue`). Jobs that
read the state when they start get a new id each time, queued unless one is
still waiting (:func:`enqueue_unless_waiting`).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ckan.model as model
import redis
import sqlalchemy as sa
from ckan.lib.jobs import get_queue
from ckan.lib.redis import connect_to_redis
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus

from .. import config
from ..leases import connection as _redis_with_timeouts
from ..leases import redis_key

log = logging.getLogger(__name__)

#: Convergence of datasets (tags, deletions), one turn per circle: quick, and never behind
#: a long copy or upload.
CONVERGE = "dcor-converge"
#: Search-index updates after jobs recorded fields: behind every convergence.
INDEX = "dcor-index"
SHORT = "dcor-short"
NORMAL = "dcor-normal"
#: The depot's queues, most urgent first.
QUEUES = (CONVERGE, INDEX, SHORT, NORMAL)


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of job: its function (by import path: RQ imports it in the work horse, and
    a job module may queue any other without importing it), and its queue; None for a
    step of the ``file`` job, which runs in its work horse or in ``run-jobs-dcor-depot``."""

    function: str
    queue: str | None


_JOBS = "ckanext.dcor_depot.jobs"

#: The one table of the depot's jobs: kind (it names the job id) -> function -> queue.
#: Each function takes the id of a resource or dataset and returns what it did. A file
#: uploaded through CKAN: ``file`` (its steps ``symlink``, ``s3-upload``,
#: ``dc-metadata``); uploaded straight to S3: ``s3-sha256``, ``dc-metadata``,
#: ``backup``; a dataset: ``index``, ``move``; a circle's turn of convergence: ``converge``.
JOBS: dict[str, Kind] = {
    "converge": Kind(f"{_JOBS}.converge.converge_turn", CONVERGE),
    "index": Kind(f"{_JOBS}.index.index_dataset", INDEX),
    "move": Kind(f"{_JOBS}.move.move_dataset", NORMAL),
    "file": Kind(f"{_JOBS}.resource_jobs.process_file", NORMAL),
    "symlink": Kind(f"{_JOBS}.symlink.symlink_resource", None),
    "s3-upload": Kind(f"{_JOBS}.upload.upload_resource", None),
    "dc-metadata": Kind(f"{_JOBS}.dc_metadata.record_dc_metadata", NORMAL),
    "s3-sha256": Kind(f"{_JOBS}.checksum.record_object_sha256", NORMAL),
    "backup": Kind(f"{_JOBS}.backup.backup_resource", NORMAL),
}


def function(kind: str) -> Callable[[str], str]:
    """The function of a kind of job (imported on first use)."""
    module, _, name = JOBS[kind].function.rpartition(".")
    return getattr(importlib.import_module(module), name)


def queue_of(kind: str) -> str:
    """The queue of a kind of job; a ``file`` job goes to dcor-short when S3 is off (a
    rename and a metadata read)."""
    if kind == "file" and config.s3_settings() is None:
        return SHORT
    queue = JOBS[kind].queue
    if queue is None:
        raise ValueError(f"{kind} is a step of the file job, not queued by itself")
    return queue


_WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def waiting_lists(kind: str) -> tuple[str, str]:
    """RQ's lists in Redis of the queued jobs of this kind: its queue's, and the one that
    holds a job a worker took and has not started yet (RQ 2 moves it there)."""
    rq_queue = get_queue(queue_of(kind))
    return rq_queue.key, rq_queue.intermediate_queue_key


def job_id(kind: str, object_id: str) -> str:
    return f"dcor-depot-{kind}-{object_id}"


def enqueue(
    kind: str,
    object_id: str,
    depends_on: str | None = None,
    skip_running: bool = True,
    allow_failure: bool = True,
) -> str:
    """Queue the job of this kind (:data:`JOBS`) for ``object_id`` unless the same job is
    already waiting (or running).

    ``skip_running=False`` queues it again while it runs: for jobs that read
    the state when they start, so a change during the run is not missed.
    ``allow_failure=False``: the job runs only if ``depends_on`` succeeded.
    """
    queue = queue_of(kind)
    jid = job_id(kind, object_id)
    # one process at a time decides whether to queue this job id (the guard, with short
    # timeouts, so that an unreachable Redis fails fast instead of hanging); the guard
    # and the job's status in one round trip
    guard = redis_key("enqueue", jid)
    claimed, status = _claim(keys=[guard, Job.key_for(jid)], client=_redis_with_timeouts())
    if not claimed:
        return jid
    released = False
    try:
        waiting = _WAITING | ({JobStatus.STARTED} if skip_running else set())
        if status and JobStatus(status.decode()) in waiting:
            return jid
        if depends_on:
            dependency = Dependency(jobs=[depends_on], allow_failure=allow_failure)
            _enqueue_call(kind, queue, jid, object_id, depends_on=dependency)
        else:  # the job and the guard's release in one round trip
            pipe = connect_to_redis().pipeline()
            _enqueue_call(kind, queue, jid, object_id, pipeline=pipe)
            pipe.delete(guard)
            pipe.execute()
            released = True
        return jid
    finally:
        if not released:
            _redis_with_timeouts().delete(guard)


#: Takes the guard of a job id (KEYS[1]) unless another process holds it; returns
#: whether it did, and the status of the job (KEYS[2], RQ's hash; "" when there is none).
_CLAIM_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 30) then
  return {1, redis.call('HGET', KEYS[2], 'status') or ''}
end
return {0, ''}
"""


def _claim(keys: list[str], client) -> tuple[bool, bytes]:
    claimed, status = client.eval(_CLAIM_SCRIPT, len(keys), *keys)
    return bool(claimed), status


def _enqueue_call(kind: str, queue: str, jid: str, object_id: str, **rq_kwargs: Any) -> None:
    """Queue the job of this kind for ``object_id`` as CKAN's ``enqueue_job`` does (its
    title in the job's meta, the same log line), in one write of the job."""
    title = f"dcor_depot {kind}"
    get_queue(queue).enqueue_call(
        func=JOBS[kind].function,
        args=[object_id],
        job_id=jid,
        timeout=config.job_timeout(queue),
        meta={"title": title},
        **rq_kwargs,
    )
    log.info('Added background job %s ("%s") to queue "%s"', jid, title, queue)


def _latest_key(kind: str, object_id: str) -> str:
    """The Redis key holding the id of the latest job of this kind for this object
    (:func:`enqueue_unless_waiting`)."""
    return redis_key("job", f"{kind}:{object_id}")


def enqueue_unless_waiting(kind: str, object_id: str) -> str | None:
    """Queue the job of this kind for ``object_id`` under a new job id, unless such a job
    has not started yet.

    A job that has started may already have read the state, so it does not
    count: a change announced while it runs gets a job of its own.
    """
    marker = _latest_key(kind, object_id)
    waiting = _redis_with_timeouts().get(marker)
    if waiting:
        try:
            status = Job.fetch(waiting.decode(), connection=connect_to_redis()).get_status()
        except NoSuchJobError:
            status = None
        if status in _WAITING:
            return None
    jid = f"{job_id(kind, object_id)}-{uuid.uuid4().hex[:8]}"
    _enqueue_call(kind, queue_of(kind), jid, object_id)
    # kept as long as RQ keeps a failed job (a year), which this one supersedes
    _redis_with_timeouts().set(marker, jid, ex=400 * 86400)
    return jid


def enqueue_as(kind: str, object_id: str, jid: str, when: float) -> None:
    """Queue the job of this kind for ``object_id`` under the id ``jid``: now, or at the
    time ``when`` (the worker's scheduler queues it then; RQ keeps whole seconds, rounded
    down: the time is rounded up, so that the job never starts before ``when``). The
    latest of its kind for the object (:func:`enqueue_unless_waiting`)."""
    queue = queue_of(kind)
    if when <= time.time():
        _enqueue_call(kind, queue, jid, object_id)
    else:
        get_queue(queue).enqueue_at(
            datetime.datetime.fromtimestamp(math.ceil(when), datetime.timezone.utc),
            JOBS[kind].function,
            object_id,
            job_id=jid,
            job_timeout=config.job_timeout(queue),
            meta={"title": f"dcor_depot {kind}"},
        )
    _redis_with_timeouts().set(_latest_key(kind, object_id), jid, ex=400 * 86400)


def after_commit(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` once CKAN's current transaction has committed.

    CKAN calls the plugin's hooks before it commits: a job queued right away
    could run on the state before the change (and not find a new resource).
    A transaction that has written nothing yet (a signal after an action that
    committed) calls it now; the same call is made once per transaction. Dropped
    when the transaction rolls back. A Redis error is logged, never raised: the
    user's change stands, ``run-jobs-dcor-depot`` catches up.
    """
    session = model.Session()
    if session.info.get(_WRITTEN):
        pending = session.info.setdefault(_PENDING, [])
        if (fn, args) not in pending:  # e.g. a dataset announced by each nested action
            pending.append((fn, args))
        return
    done = session.info.setdefault(_DONE, [])
    if (fn, args) not in done:  # not when it ran at the commit, nothing written since
        done.append((fn, args))
        queue_or_log(fn, *args)


def commit_pending() -> bool:
    """CKAN's current transaction has written: :func:`after_commit` calls wait for its
    commit."""
    return bool(model.Session().info.get(_WRITTEN))


_PENDING = "dcor_depot_jobs_after_commit"
#: the calls made at the last commit, while no statement ran since
_DONE = "dcor_depot_jobs_done"
#: names of what the session's info keeps from the last commit until the session writes or
#: runs a statement again (:func:`until_next_statement`)
_SINCE_COMMIT: set[str] = {_DONE}
_WRITTEN = "dcor_depot_written"
#: names of :func:`transaction_list` lists in the session's info
_SCOPED: set[str] = set()


def transaction_list(name: str) -> list[Any]:
    """A list in CKAN's session that lives as long as its transaction: it goes when the
    transaction commits (after the calls of :func:`after_commit`, which may read it) or
    rolls back."""
    _SCOPED.add(name)
    return model.Session().info.setdefault(name, [])


def queue_or_log(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)``; log a Redis error instead of raising it.

    After a Redis error the rest of the request (CKAN's database session, which
    ends with each request) does not ask Redis again for
    :data:`REDIS_RETRY_SECONDS`: a request waits on an unresponsive Redis at most
    once, however many datasets and files it changed.
    """
    what = args[0]["id"] if isinstance(args[0], Mapping) else args[0]
    info = model.Session().info
    failed = info.get(_REDIS_FAILED)
    if failed is not None and time.monotonic() - failed < REDIS_RETRY_SECONDS:
        log.warning(
            "dcor_depot: did not queue %s for %s: Redis failed moments ago; the change "
            "itself is saved. `ckan run-jobs-dcor-depot` will catch up",
            fn.__name__,
            what,
        )
        return
    try:
        fn(*args)
    except redis.exceptions.RedisError as exc:
        info[_REDIS_FAILED] = time.monotonic()
        log.warning(
            "dcor_depot: could not queue %s for %s (%s); the change itself is saved. "
            "`ckan run-jobs-dcor-depot` will catch up",
            fn.__name__,
            what,
            exc,
        )


#: Seconds for which a session (a request) does not ask Redis again after it failed.
REDIS_RETRY_SECONDS = 30
_REDIS_FAILED = "dcor_depot_redis_failed"


def until_next_statement(name: str) -> dict[str, Any]:
    """A dict in CKAN's session that lives until the session writes or runs a statement
    again: what was read at a commit stays current for the calls made after it."""
    _SINCE_COMMIT.add(name)
    return model.Session().info.setdefault(name, {})


def _forget_since_commit(session) -> None:
    for name in _SINCE_COMMIT:
        session.info.pop(name, None)


def _written(session, flush_context) -> None:
    session.info[_WRITTEN] = True
    _forget_since_commit(session)


def _begun(session, transaction, connection) -> None:
    # a statement after the commit (it may write with plain SQL, which no flush announces,
    # as CKAN 2.11's bulk actions do): what the commit left is no longer current
    _forget_since_commit(session)


def _run_pending(session) -> None:
    if session.in_nested_transaction():
        # a savepoint released (CKAN 2.12's package_update), which SQLAlchemy announces as
        # a commit: the transaction that holds the change has not committed yet
        return
    session.info.pop(_WRITTEN, None)
    pending = session.info.pop(_PENDING, [])
    for name in _SCOPED:  # the calls hold the lists they read
        session.info.pop(name, None)
    session.info[_DONE] = list(pending)
    for fn, args in pending:
        queue_or_log(fn, *args)


def _drop_pending(session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint rolled back: the outer transaction decides
    session.info.pop(_WRITTEN, None)
    session.info.pop(_PENDING, None)
    _forget_since_commit(session)
    for name in _SCOPED:
        session.info.pop(name, None)


if not sa.event.contains(model.Session, "after_commit", _run_pending):
    sa.event.listen(model.Session, "after_flush", _written)
    sa.event.listen(model.Session, "after_begin", _begun)
    sa.event.listen(model.Session, "after_commit", _run_pending)
    sa.event.listen(model.Session, "after_rollback", _drop_pending)


@dataclasses.dataclass(frozen=True)
class QueuedJob:
    """One of the depot's jobs that waits, runs or failed."""

    job_id: str
    #: "queued", "deferred", "scheduled", "running" or "failed"
    state: str
    kind: str
    #: the resource's (or a dataset's) id the job is for
    object_id: str
    #: when it was queued, or when it failed
    when: datetime.datetime | None
    #: why it failed: the last line of its traceback
    reason: str | None = None


def depot_jobs() -> list[QueuedJob]:
    """The depot's jobs waiting or running, and those that failed and were not queued
    again since. A running job whose worker is gone (its lease in the registry
    expired) failed too. Only reads: RQ's clean-up of its registries is left to the
    workers."""
    found = []
    now = time.time()
    for name in QUEUES:
        queue = get_queue(name)
        started = _ids(queue.started_job_registry)
        registries = {
            "queued": [(jid, None) for jid in queue.get_job_ids()],
            "deferred": _ids(queue.deferred_job_registry),
            "scheduled": _ids(queue.scheduled_job_registry),
            "running": [(jid, score) for jid, score in started if score >= now],
            "abandoned": [(jid, score) for jid, score in started if score < now],
            "failed": _ids(queue.failed_job_registry),
        }
        for state, entries in registries.items():
            ids = [jid for jid, _ in entries]
            for job in Job.fetch_many(ids, connection=queue.connection):
                if job is None or not job.args or not isinstance(job.args[0], str):
                    continue
                kind = _kind(job)
                object_id = _object_of(job)
                if state == "failed":
                    # a job queued again under the same id is no longer a failure, nor
                    # is a dataset's job queued again under a new id
                    if job.get_status(refresh=False) != JobStatus.FAILED or _superseded(job, kind):
                        continue
                    reason = _reason(job)
                    found.append(QueuedJob(job.id, state, kind, object_id, job.ended_at, reason))
                elif state == "abandoned":
                    if _superseded(job, kind):
                        continue
                    reason = (
                        "abandoned: its worker stopped without ending it (killed, or its host "
                        "went down); run-jobs-dcor-depot runs it again"
                    )
                    when = job.started_at
                    found.append(QueuedJob(job.id, "failed", kind, object_id, when, reason))
                else:
                    found.append(QueuedJob(job.id, state, kind, object_id, job.enqueued_at))
    return found


def _ids(registry) -> list[tuple[str, float]]:
    """The job ids of an RQ registry with their scores (for the started registry: when
    a job's lease expires), without the clean-up ``get_job_ids`` runs."""
    raw = registry.connection.zrange(registry.key, 0, -1, withscores=True)
    parse = getattr(registry, "parse_job_id", None)  # rq 2: "id:execution" entries
    return [(parse(entry) if parse else entry.decode(), score) for entry, score in raw]


def _object_of(job: Job) -> str:
    """The resource or dataset a job is for: a circle's turn of convergence names the
    dataset it converged (``meta["dataset"]``), else its circle."""
    return job.meta.get("dataset") or job.args[0]


def _kind(job: Job) -> str:
    return (job.meta.get("title") or job.func_name).removeprefix("dcor_depot ")


def _superseded(job: Job, kind: str) -> bool:
    """A job queued under a new id each time (:func:`enqueue_unless_waiting`): a later
    one of its kind for the same dataset was queued and waits, runs or succeeded; or
    RQ forgot it, as it forgets a job that succeeded after its ``result_ttl`` (a failed
    one it keeps for a year). A circle's turn that failed on a dataset: that dataset
    was converged since (no change of it is announced any more)."""
    if kind == "converge" and job.meta.get("dataset"):
        return not _redis_with_timeouts().exists(redis_key("converge", job.meta["dataset"]))
    latest = _redis_with_timeouts().get(_latest_key(kind, job.args[0]))
    if latest is None or latest.decode() == job.id:
        return False
    try:
        status = Job.fetch(latest.decode(), connection=job.connection).get_status()
    except NoSuchJobError:
        return True
    return status in _WAITING | {JobStatus.STARTED, JobStatus.FINISHED}


def _reason(job: Job) -> str:
    """The last line of the traceback of the job's latest run."""
    result = job.latest_result()
    if result is not None and result.type != result.Type.SUCCESSFUL and result.exc_string:
        trace = result.exc_string
    else:
        trace = job._exc_info or ""  # no result kept (results off, or an old RQ)
    lines = [line for line in trace.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed (no traceback kept)"


def forget_failures(object_ids: Iterable[str]) -> int:
    """Remove the failed jobs of these resources from the failed registries: their
    work was done since (``run-jobs-dcor-depot`` ran it in its own process)."""
    ids = set(object_ids)
    removed = 0
    for name in QUEUES:
        registry = get_queue(name).failed_job_registry
        job_ids = [jid for jid, _ in _ids(registry)]
        for job in Job.fetch_many(job_ids, connection=registry.connection):
            if job is not None and job.args and _object_of(job) in ids:
                registry.remove(job, delete_job=True)
                removed += 1
    return removed
