"""The depot's RQ worker: CKAN's worker without a reload of CKAN per job.

``ckan jobs worker`` forks a work horse for every job, and the horse loads
CKAN's environment again (``load_environment``: the plugins, the config),
0.15-0.35 s before each job starts. The worker process loaded that environment
when the command started, and a fork inherits it, so these horses skip the
reload. The worker also does once what every horse would otherwise do first
(:func:`warm_up`): import dclab (about 1.5 s) and let SQLAlchemy set up its
mappers and compile the jobs' reads (0.1 s); the plugin's ``before_fork``
creates the S3 client (botocore loads its service model, 0.15 s) without a
request. Everything else is CKAN's worker: a horse per job (a job killed or
timed out never takes the worker with it), the database engine disposed
before each fork, the plugins' ``IForkObserver`` called. A change of the ini
file takes effect when the worker restarts (as for the web server).

A worker on dcor-converge looks at the circles' lines when it starts and every
``ckanext.dcor_depot.line_check_seconds`` between two jobs or while it waits
for one (:func:`converge.queue_orphaned_turns`: a circle whose turn nobody holds
any more gets a new one), and starts a scheduler then if none of its own runs
(the worker whose scheduler ran may have died: RQ itself looks every 10 minutes).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ckan.model as model
from ckan.lib import jobs as ckan_jobs

from .. import config
from ..model import ckan_rows
from . import converge, queue

log = logging.getLogger(__name__)


def _queue_orphaned_turns() -> None:
    try:
        queued = converge.queue_orphaned_turns()
    except Exception as exc:  # noqa: BLE001 - the worker starts all the same
        log.warning("Worker: the circles' lines were not looked at: %s", exc)
        return
    if queued:
        log.info("Worker: queued %d circles' turns that nobody held any more", queued)


def warm_up() -> None:
    """Prepare in the worker what every forked horse inherits (see the module docstring)."""
    import dclab.rtdc_dataset.fmt_http  # noqa: F401

    for kind in queue.JOBS:  # RQ imports a job's function by its path in the horse
        queue.function(kind)
    try:
        found = ckan_rows.any_active_resource()
        if found is not None:  # the reads of every job, on any resource
            ckan_rows.show_resource(found[0])
            ckan_rows.dataset_names(found[1])
    except Exception as exc:  # noqa: BLE001 - only a head start: the jobs work without it
        log.warning("Worker warm-up skipped (the jobs run, each a little slower): %s", exc)
    finally:
        model.Session.remove()
        model.meta.engine.dispose()  # nothing pooled for RQ's scheduler process to inherit


class Worker(ckan_jobs.Worker):
    #: Whether the worker takes jobs of dcor-converge (set when it starts to work).
    _converges = False
    #: When (time.monotonic()) a worker on dcor-converge looks at the circles' lines next.
    _next_look = 0.0

    #: Whether the worker stops when the queues are empty (it starts no scheduler then).
    _burst = False
    #: Whether the worker is in its maintenance (RQ's own, the look at the lines).
    _maintaining = False

    def work(self, burst: bool = False, **kwargs: Any) -> Any:
        warm_up()
        self._converges = ckan_jobs.get_queue(queue.CONVERGE).name in self.queue_names()
        self._burst = burst
        return super().work(burst=burst, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        # an idle converging worker's wait for a job ends in time for its next look
        if not self._converges:
            return super().dequeue_timeout
        return max(1, min(super().dequeue_timeout, config.line_check_seconds() // 2))

    @property
    def connection_timeout(self) -> int:
        # RQ's socket timeout of the worker's Redis connection, as without the looks
        return super().dequeue_timeout + 10

    @property
    def should_run_maintenance_tasks(self) -> bool:
        # RQ asks before every wait for a job, and also when a stop was requested during a
        # job: then no maintenance, which would start the scheduler (RQ's and the look)
        # that the stop just ended. Teardown stops that new one at once, and RQ's
        # scheduler process may ignore a signal within 1 s of the first: the worker
        # waited for it for ever.
        if self._stop_requested:
            return False
        return super().should_run_maintenance_tasks or self._look_due()

    def run_maintenance_tasks(self) -> None:
        self._maintaining = True
        try:
            if super().should_run_maintenance_tasks:  # RQ's own, every 10 minutes
                super().run_maintenance_tasks()
            if self._look_due():
                if self._next_look and not self._burst:  # not at the start: work() set it up
                    self._restart_scheduler()
                self._next_look = time.monotonic() + config.line_check_seconds()
                _queue_orphaned_turns()
        finally:
            self._maintaining = False

    def _shutdown(self) -> None:
        # RQ's answer to SIGTERM/SIGINT. An idle worker raises StopRequested wherever it is;
        # in the maintenance, the look would catch it as a failed look and the worker would
        # go on for ever. There it only notes the request: RQ's loop stops right after.
        if self._maintaining:
            self._stop_requested = True
            return
        super()._shutdown()

    def _look_due(self) -> bool:
        return self._converges and time.monotonic() >= self._next_look

    def _restart_scheduler(self) -> None:
        # what RQ's maintenance does every 10 minutes: a worker whose scheduler is not
        # running (another worker's ran, and it died) starts one, so that the turns
        # scheduled for when a lease ends or a failed turn's retry is due are queued
        scheduler = getattr(self, "scheduler", None)
        process = getattr(scheduler, "_process", None)
        if scheduler is not None and (process is None or not process.is_alive()):
            try:
                scheduler.acquire_locks(auto_start=True)
            except Exception as exc:  # noqa: BLE001 - the look at the lines goes on
                log.warning("Worker: its scheduler was not started: %s", exc)

    def handle_work_horse_killed(self, job: Any, retpid: Any, ret_val: Any, rusage: Any) -> None:
        # a circle's turn cut off (killed, timed out) before its end: its dataset waits in
        # line again and the circle goes on to its next turn
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        if job.func_name == queue.JOBS["converge"].function:
            try:
                job.refresh()  # the dataset the horse named in the job's meta
                converge.turn_killed(job.args[0], job.id, job.meta.get("dataset"))
            except Exception:  # noqa: BLE001 - the worker goes on; the sweep catches up
                log.exception("Worker: the turn of circle %s was not handed on", job.args[0])

    def main_work_horse(self, job: Any, queue: Any) -> Any:
        # rq's own horse entry point, not CKAN's, which reloads the environment first
        return super(ckan_jobs.Worker, self).main_work_horse(job, queue)
