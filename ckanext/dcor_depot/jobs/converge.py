"""Job (queue dcor-converge): bring a dataset's objects to the state CKAN says they should have.

One job per dataset replaces what a visibility job did, on every path that
changes CKAN (``subscriptions.py``): from the files that
:func:`placement.dataset_files` derives, every recorded object gets the
public tag exactly when anonymous reading is allowed (its other tags are
kept), an unrecorded object where a file belongs is private, the old copy
of a moved object is deleted once the new one is recorded, resources CKAN
lost (purge) are marked in the extension's table and their local copies
made unreadable, and objects in another circle's bucket are handed to the
move job (``move.py``) on dcor-normal, so that a long copy never delays a
private switch.

Runs for one dataset never overlap, on any host: each holds the dataset's
lease (``locks.dataset_lock``, a lease in Redis: ``leases.py``). A change is
announced by a fresh token in Redis (:func:`request_convergence`); a run
consumes the token it read only after converging, and whoever releases the
lease looks for a newer token, so a change committed while a run is under way
is converged again.

Circles take turns: an announced dataset waits in its circle's line (a sorted
set in Redis), and a circle holds at most one turn (:func:`converge_turn`) that is
queued or running: the turn converges the first dataset due in that line and, when
the line holds more, hands the circle to its next turn, queued behind the other
circles' turns. However many changes one user makes, another circle's private switch
waits for at most the one turn of each other circle that runs. A dataset whose lease
is held waits in the line until the lease ends: when the holder died, its change is
converged then (the worker's scheduler queues the turn at that time). A turn whose
work horse is killed puts its dataset back in line and hands the circle on (the
README's worker, ``jobs/worker.py``); each converging worker of the README looks at the
lines when it starts and every ``ckanext.dcor_depot.line_check_seconds``, and queues the
turn of a line whose turn nobody holds any more (a worker killed with its horse, or
stopped; a turn canceled; a process that stopped between a turn and its job).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from rq import get_current_job
from rq.job import Job
from rq.worker import Worker

from .. import config, errors, locks, placement
from ..leases import connection, redis_key
from ..model import ckan_rows, depot_files
from ..storage.depot import make_unreadable
from ..storage.s3 import PUBLIC_TAG, ObjectStore, S3Error, UploadResult
from . import queue

log = logging.getLogger(__name__)

#: Seconds a job or command waits for a dataset's lease held by another (short) run.
LEASE_WAIT = 120.0
_CONSUME = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@dataclasses.dataclass
class Converged:
    """What one pass over a dataset did (or, in a dry run, would do)."""

    name: str
    tagged: int = 0
    right: int = 0
    deleted: int = 0
    adopted: int = 0
    lost: int = 0
    locked: int = 0
    moves: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.tagged + self.deleted + self.adopted + self.lost + self.locked

    def summary(self) -> str:
        parts = [f"{self.tagged} tags changed", f"{self.right} were right"]
        for count, what in (
            (self.deleted, "old copies of moved objects deleted"),
            (self.adopted, "records adopted from the resource's fields"),
            (self.lost, "resources lost by CKAN recorded as purged"),
            (self.locked, "local copies of purged files made unreadable"),
            (self.moves, "objects to move to the circle's bucket"),
        ):
            if count:
                parts.append(f"{count} {what}")
        return f"dataset {self.name}: " + ", ".join(parts)


def request_convergence(package_id: str, circle: str | None = None) -> None:
    """Announce that a dataset changed: it is converged (again) in its circle's turn
    (``circle``: its circle as committed, when the caller knows it)."""
    if config.s3_settings() is None:
        return
    connection().set(redis_key("converge", package_id), uuid.uuid4().hex)
    wait_in_line(package_id, circle)


#: The line of the datasets without a circle.
NO_CIRCLE_LINE = "-"


def wait_in_line(package_id: str, circle: str | None = None, at: float | None = None) -> None:
    """Put the dataset in its circle's line, due now (or at the time ``at``; a dataset
    already waiting keeps the earlier time), and queue the circle's turn unless one that
    runs no later is queued or running (:data:`_ENTER_LINE`)."""
    if circle is None:
        circle = ckan_rows.committed_circle(package_id)[1] or NO_CIRCLE_LINE
    now = time.time()
    _enter_line(circle, package_id, now if at is None else at, now)


def _enter_line(circle: str, package_id: str, due: float, now: float) -> bool:
    """:data:`_ENTER_LINE` (``package_id`` "": nobody enters, the circle's turn is queued
    if nobody holds it and its line holds a dataset); whether a turn was queued."""
    queued, intermediate = queue.waiting_lists("converge")
    turn = connection().eval(
        _ENTER_LINE,
        2,
        redis_key("line", circle),
        redis_key("turn", circle),
        package_id,
        repr(due),
        _new_turn_id(circle),
        TURN_SECONDS,
        _RQ_JOB_KEY,
        repr(now),
        _RQ_WORKER_KEY,
        repr(_TURN_GRACE),
        queued,
        intermediate,
    )
    _queue(circle, turn)
    return bool(turn)


#: Seconds for which a circle's turn holds the circle at most: a turn whose job RQ never
#: marks as ended (its worker's host lost) stops holding it then.
TURN_SECONDS = 3600
#: RQ's key of a job is this prefix and the job's id.
_RQ_JOB_KEY = Job.key_for("")
_RQ_JOB_KEY = _RQ_JOB_KEY.decode() if isinstance(_RQ_JOB_KEY, bytes) else _RQ_JOB_KEY

#: A circle holds at most one turn that is queued or running (KEYS[2], "<job id> <when>
#: <written>"), so that another circle's change waits for at most the one that runs. The
#: line (KEYS[1]) and the turn are written in one script with the turn's end
#: (:data:`_END_TURN`): a dataset that enters the line while a turn runs is in the line
#: when that turn ends, and the turn queues the next. A turn holds nothing when its job
#: ended without ending the turn (failed, stopped, canceled, or its work horse was
#: killed), when it is marked started by a worker that is no longer registered (its whole
#: process group was killed: RQ lets a worker's registration lapse 90 s after its last
#: heartbeat), when it is marked queued but is in none of RQ's lists of queued jobs
#: (ARGV[9], ARGV[10]: a worker took it and was killed before it started it), or its job
#: does not exist, :data:`_TURN_GRACE` seconds after the turn was written (whoever queues
#: it stopped before it did), when it runs later than the dataset is due (scheduled for
#: when a lease ends), and when it is scheduled and its time has come (RQ's scheduler
#: queues it within a second): a new turn takes the circle then. The earlier due time of
#: a dataset wins (Redis 6.2's ZADD LT, written out for older Redis); no dataset enters
#: when ARGV[1] is "" (a look at the line). Returns {job id, when} of a turn to queue, or
#: {}.
_ENTER_LINE = """
local now = tonumber(ARGV[6])
if ARGV[1] ~= '' then
  local current = redis.call('zscore', KEYS[1], ARGV[1])
  if (not current) or tonumber(ARGV[2]) < tonumber(current) then
    redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
  end
end
local owner = redis.call('get', KEYS[2])
if owner then
  local jid, when, written = string.match(owner, '^(%S+) (%S+) ?(%S*)$')
  when = tonumber(when)
  local job = ARGV[5] .. jid
  local status = redis.call('hget', job, 'status')
  local young = written ~= '' and tonumber(written) + tonumber(ARGV[8]) > now
  local alive
  if status == 'started' then
    local worker = redis.call('hget', job, 'worker_name')
    alive = (not worker) or worker == '' or redis.call('exists', ARGV[7] .. worker) == 1
  elseif status == 'queued' then
    alive = young or redis.call('lpos', ARGV[9], jid) ~= false
      or redis.call('lpos', ARGV[10], jid) ~= false
  elseif status then
    -- a scheduled turn whose time has come waits for the scheduler (up to a second): not
    -- for a dataset due now
    alive = status == 'deferred' or (status == 'scheduled' and when > now)
  else
    alive = young
  end
  if alive and when <= tonumber(ARGV[2]) then
    return {}
  end
end
local first = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  return {}
end
local when = math.max(tonumber(first[2]), now)
redis.call('set', KEYS[2], ARGV[3] .. ' ' .. tostring(when) .. ' ' .. ARGV[6], 'EX', ARGV[4])
return {ARGV[3], tostring(when)}
"""

#: Seconds after its turn was written by which a turn's job exists (it is queued right
#: after the script that wrote the turn).
_TURN_GRACE = 10.0
#: RQ's key of a worker is this prefix and the worker's name (registered while it lives).
_RQ_WORKER_KEY = Worker.redis_worker_namespace_prefix

#: The end of a circle's turn (ARGV[1]: its job id): when it still holds the circle, the
#: next turn (ARGV[2]) takes it if the line holds a dataset, else nobody. Returns what
#: :data:`_ENTER_LINE` returns.
_END_TURN = """
local owner = redis.call('get', KEYS[2])
if (not owner) or string.sub(owner, 1, #ARGV[1] + 1) ~= (ARGV[1] .. ' ') then
  return {}
end
local first = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('del', KEYS[2])
  return {}
end
local when = math.max(tonumber(first[2]), tonumber(ARGV[4]))
redis.call('set', KEYS[2], ARGV[2] .. ' ' .. tostring(when) .. ' ' .. ARGV[4], 'EX', ARGV[3])
return {ARGV[2], tostring(when)}
"""


def _new_turn_id(circle: str) -> str:
    return f"{queue.job_id('converge', circle)}-{uuid.uuid4().hex[:8]}"


def _queue(circle: str, turn: list) -> None:
    """Queue the turn a script handed out (now, or when its first dataset is due)."""
    if turn:
        jid, when = (part.decode() if isinstance(part, bytes) else part for part in turn)
        queue.enqueue_as("converge", circle, jid, float(when))


def converge_turn(circle: str) -> str:
    """The job: one turn of a circle, one pass over the first dataset due in its line
    (:func:`converge_dataset`); when the line holds more (also that dataset, changed
    during the pass), the circle's next turn is queued behind the other circles' turns.
    A failed convergence fails the job, named by its dataset (``job.meta["dataset"]``),
    and the turns go on; its dataset waits in line again, due after
    :data:`RETRY_SECONDS` while its change is announced (a store that failed once is
    tried again without another change or the daily sweep).

    The dataset stays in the line until its change is converged: during the pass it is
    due only when the pass's lease would end, had its holder died (so that no other turn
    takes it meanwhile, and a turn killed with its worker leaves it due then)."""
    line = redis_key("line", circle)
    job = get_current_job()
    try:
        due = connection().zrangebyscore(line, "-inf", time.time(), start=0, num=1)
        if not due:
            return f"circle {circle}: nothing due"
        package_id = due[0].decode()
        if job is not None:
            job.meta["dataset"] = package_id
            job.save_meta()
        busy = repr(time.time() + config.lease_seconds())
        connection().zadd(line, {package_id: busy}, xx=True)
        try:
            message = converge_dataset(package_id, circle, once=True)
        except Exception:
            try:
                _after_pass(line, package_id, busy, retry_at=time.time() + RETRY_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the turn's own failure is the one to report
                log.warning("dataset %s: not put back in line: %s", package_id, exc)
            raise
        _after_pass(line, package_id, busy)
        return message
    finally:
        _end_turn(circle, job.id if job is not None else "")


#: Seconds after which the dataset of a failed turn is converged again.
RETRY_SECONDS = 30.0


def _after_pass(line: str, package_id: str, busy: str, retry_at: float | None = None) -> None:
    """After a turn's pass over a dataset that it left in line due at ``busy``: the dataset
    leaves the line if its change was converged, or (``retry_at``, after a failure) waits
    until then; a change announced during the pass (it made the dataset due earlier) is
    left as it is (:data:`_AFTER_PASS`)."""
    connection().eval(
        _AFTER_PASS,
        2,
        line,
        redis_key("converge", package_id),
        package_id,
        busy,
        "" if retry_at is None else repr(retry_at),
    )


_AFTER_PASS = """
local score = redis.call('zscore', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  if redis.call('exists', KEYS[2]) == 0 then
    redis.call('zrem', KEYS[1], ARGV[1])
  elseif ARGV[3] ~= '' then
    redis.call('zadd', KEYS[1], ARGV[3], ARGV[1])
  end
end
return 0
"""


def turn_killed(circle: str, job_id: str, package_id: str | None) -> None:
    """A circle's turn ended without its end (its work horse was killed, or timed out):
    the dataset it converged is due again now while its change is announced, and the
    circle goes to the next turn (``jobs/worker.py`` calls this in the worker)."""
    if package_id and pending(package_id):
        line = redis_key("line", circle)
        connection().eval(_ENTER_LINE_ONLY, 1, line, package_id, repr(time.time()))
    _end_turn(circle, job_id)


def queue_orphaned_turns() -> int:
    """Queue a turn for every circle whose line holds datasets and whose turn is held by
    no live job (a worker stopped or was killed while it ran one, its job never ended):
    what happened while no worker ran is converged when one starts or looks. A circle
    whose look failed is logged, and the others are looked at. Returns the turns queued."""
    queued = 0
    prefix = redis_key("line", "")
    for key in connection().scan_iter(match=f"{prefix}*", count=1000):
        circle = key.decode()[len(prefix) :]
        try:
            # due "never": a turn that lives holds the circle whenever it runs
            queued += _enter_line(circle, "", _NEVER, time.time())
        except Exception as exc:  # noqa: BLE001 - one circle never stops the look at the others
            log.warning("circle %s: its line was not looked at: %s", circle, exc)
    return queued


_NEVER = 1e15

_ENTER_LINE_ONLY = """
local current = redis.call('zscore', KEYS[1], ARGV[1])
if (not current) or tonumber(ARGV[2]) < tonumber(current) then
  redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
end
return 0
"""


def _end_turn(circle: str, job_id: str) -> None:
    turn = connection().eval(
        _END_TURN,
        2,
        redis_key("line", circle),
        redis_key("turn", circle),
        job_id,
        _new_turn_id(circle),
        TURN_SECONDS,
        repr(time.time()),
    )
    _queue(circle, turn)


def pending(package_id: str) -> bool:
    return bool(connection().exists(redis_key("converge", package_id)))


def converge_dataset(package_id: str, circle: str | None = None, once: bool = False) -> str:
    """Converge the dataset as long as changes are announced for it (``once``: one pass,
    as a circle's turn does: a change announced during the pass put the dataset in its
    circle's line again, so that one user's changes never keep a turn to themselves). When
    another run holds its lease, that run converges the change; if it died, its lease ends
    within ``ckanext.dcor_depot.lease_seconds``, and the dataset waits in its circle's
    line until then."""
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    done: list[Converged] = []
    key = redis_key("converge", package_id)
    while pending(package_id):
        lease = locks.dataset_lock(package_id)
        if not lease.acquire():
            ends = time.time() + lease.remaining() + 0.1
            wait_in_line(package_id, circle, at=ends)
            return (
                f"dataset {package_id}: another run holds it and converges this change; "
                "if that run stopped, it is converged when its lease ends"
            )
        try:
            while (token := connection().get(key)) is not None:
                done.append(converge_files(store, placement.dataset_files(store, package_id)))
                if done[-1].problems:
                    # the job fails (listed on the health page); the change stays announced
                    raise errors.JobError(
                        f"dataset {package_id}: " + "; ".join(done[-1].problems) + "; the "
                        "next change or run-jobs-dcor-depot (its sweep) converges it again"
                    )
                connection().eval(_CONSUME, 1, key, token)
                if once:
                    break
        finally:
            lease.release()
        if once:
            break
    if not done:
        return f"dataset {package_id}: nothing announced"
    message = done[-1].summary() + (f" ({len(done)} passes)" if len(done) > 1 else "")
    log.info(message)
    return message


@contextlib.contextmanager
def dataset_lease(package_id: str, wait: float = LEASE_WAIT) -> Iterator[None]:
    """Hold the dataset's lease for a short piece of work that changes its objects.

    A convergence announced meanwhile may have found the lease taken: it is
    run here once the lease is released. When the work failed, or that convergence
    failed, a convergence job is queued instead (a job that fails is listed on the
    health page): a change announced meanwhile is never left to nobody.
    """
    lease = locks.dataset_lock(package_id, wait=wait)
    if not lease.acquire():
        raise errors.JobError(
            f"Dataset {package_id} is held by another process for more than {wait:.0f} s; "
            "run this again later"
        )
    try:
        yield
    except BaseException:
        lease.release()
        if pending(package_id):
            queue.queue_or_log(request_convergence, package_id)
        raise
    lease.release()
    if pending(package_id):
        try:
            converge_dataset(package_id)
        except (errors.JobError, S3Error) as exc:
            log.warning("%s", exc)
            queue.queue_or_log(request_convergence, package_id)


def align_resource(store: ObjectStore, package_id: str, *resource_ids: str) -> Converged:
    """Bring the objects of some resources in line with their dataset as it is now."""
    with dataset_lease(package_id):
        return converge_files(store, placement.dataset_files(store, package_id, resource_ids))


def converge_here(store: ObjectStore, package_id: str, dry_run: bool = False) -> Converged:
    """Converge a dataset in this process (commands), under its lease."""
    if dry_run:
        return converge_files(store, placement.dataset_files(store, package_id), dry_run=True)
    with dataset_lease(package_id):
        return converge_files(store, placement.dataset_files(store, package_id))


def converge_files(
    store: ObjectStore,
    files: placement.DatasetFiles,
    dry_run: bool = False,
    verified: frozenset[placement.ObjectLocation] = frozenset(),
) -> Converged:
    """One pass over the files of a dataset; the caller holds the dataset's lease.
    ``verified``: objects the caller verified under the lease (a move's copies), which
    are not looked up again before the old copies they replace are deleted."""
    done = Converged(files.name or files.package_id)
    lost = {
        f.resource_id
        for f in files.files
        if f.resource_state == "gone" and f.in_table and f.purged is None
    }
    done.lost = len(lost)
    if lost and not dry_run:
        depot_files.mark_purged(lost)
    # the tags first, many at once (a private switch of a dataset of many files waits for
    # the last of them); then the rest of each file, in order
    tagged = _tag_all(store, files.files, done, dry_run)
    for placed in files.files:
        what = f"resource {placed.resource_id} ({placed.artifact})"
        try:
            if (problem := tagged.get((placed.resource_id, placed.artifact))) is not None:
                raise problem
            _converge_file(store, files.package_id, placed, done, dry_run, verified)
        except (S3Error, errors.JobError, OSError) as exc:
            done.problems.append(f"{what}: {exc}")
        if placed.problem:  # made private above, if it has an object
            done.problems.append(f"{what}: {placed.problem}")
    if done.moves and not done.problems and not dry_run:
        queue.enqueue_unless_waiting("move", files.package_id)
    return done


def _converge_file(
    store: ObjectStore,
    package_id: str,
    placed: placement.PlacedFile,
    done: Converged,
    dry_run: bool,
    verified: frozenset[placement.ObjectLocation] = frozenset(),
) -> None:
    if placed.recorded and not placed.in_table:
        done.adopted += 1
        if not dry_run:
            result = UploadResult(*placed.recorded, placed.size, placed.sha256, placed.etag or "")
            depot_files.record_object(package_id, placed.resource_id, placed.artifact, result)
    if placed.moved_from and placed.recorded:
        if placed.recorded in verified:
            intact = True
        else:
            new = store.object_info(*placed.recorded)
            intact = new is not None and new.size == placed.size
        if intact:
            done.deleted += 1
            if not dry_run:
                store.delete_object(*placed.moved_from)
                depot_files.clear_moved_from(
                    placed.resource_id, placed.artifact, placed.moved_from.bucket
                )
    if placed.needs_move:
        done.moves += 1
    if placed.purged is not None or placed.resource_state == "gone":
        for path in _local_copies(placed):
            if make_unreadable(path, dry_run):
                done.locked += 1


#: Tag requests a convergence sends at once.
TAGGING_THREADS = 8


def _tag_all(
    store: ObjectStore, files: list[placement.PlacedFile], done: Converged, dry_run: bool
) -> dict[tuple[str, str], Exception]:
    """Give every object of ``files`` the visibility it must have, in parallel (one GET of
    its tags, and a write only when they differ); the errors by file."""
    work = []
    for placed in files:
        if placed.recorded:
            work.append((placed, placed.recorded, placed.public))
        if placed.wanted and placed.wanted != placed.recorded:
            work.append((placed, placed.wanted, False))  # a copy nobody recorded there
        if placed.moved_from and placed.moved_from != placed.recorded:
            # the old copy a move left (deleted below once the new one is there): nobody
            # reads it, and it must not stay public when the dataset no longer is
            work.append((placed, placed.moved_from, False))

    def tag(location: placement.ObjectLocation, public: bool) -> str:
        current = store.tags(*location)
        if current is None:
            return "missing"
        if (PUBLIC_TAG in current) == public:
            return "right"
        if not dry_run:
            store.set_public(*location, public, current=current)
        return "tagged"

    problems: dict[tuple[str, str], Exception] = {}
    with ThreadPoolExecutor(min(TAGGING_THREADS, max(1, len(work)))) as pool:
        futures = [
            (placed, pool.submit(tag, location, public)) for placed, location, public in work
        ]
        for placed, future in futures:
            try:
                outcome = future.result()
            except (S3Error, OSError) as exc:
                problems.setdefault((placed.resource_id, placed.artifact), exc)
                continue
            done.right += outcome == "right"
            done.tagged += outcome == "tagged"
    return problems


def _local_copies(placed: placement.PlacedFile) -> list:
    """The local copies of a file: CKAN's path (and the depot file behind it), the backup."""
    if placed.artifact != "resource":
        return []
    paths = []
    if placed.local is not None and placed.local.exists():
        paths.append(placed.local)
    backup = placement.backup_path(placed.resource_id)
    if backup is not None and backup.exists():
        paths.append(backup)
    return paths
