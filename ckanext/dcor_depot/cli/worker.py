"""``ckan dcor-depot-worker``: an RQ worker for the depot's queues (``jobs/worker.py``)."""

from __future__ import annotations

import click

from ..jobs.queue import QUEUES
from ..jobs.worker import Worker


@click.command("dcor-depot-worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--no-scheduler", is_flag=True, help="Do not queue scheduled jobs from this worker.")
@click.argument("queues", nargs=-1)
def dcor_depot_worker(burst: bool, no_scheduler: bool, queues: tuple[str, ...]):
    """Run the depot's jobs: like `ckan jobs worker QUEUES`, without reloading CKAN per job.

    QUEUES: the queues to take jobs from, most urgent first; by default the
    depot's four (dcor-converge dcor-index dcor-short dcor-normal). Each job runs in a
    process of its own, forked from this one, which loaded CKAN once when it
    started (0.15-0.35 s saved per job); restart the worker after a change of
    the ini file.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-depot-worker dcor-converge
    """
    Worker(list(queues or QUEUES)).work(burst=burst, with_scheduler=not no_scheduler)
