"""The depot's RQ worker: CKAN's worker without a reload of CKAN per job.

``ckan jobs worker`` forks a work horse for every job, and the horse loads
CKAN's environment again (``load_environment``: the plugins, the config),
0.15-0.35 s before each job starts. The worker process loaded that environment
when the command started, and a fork inherits it, so these horses skip the
reload. The worker also imports dclab once (about 1.5 s), which the horse of
every DC metadata job would otherwise import again. Everything else is CKAN's
worker: a horse per job (a job killed or timed out never takes the worker with
it), the database engine disposed before each fork, the plugins'
``IForkObserver`` called. A change of the ini file takes effect when the
worker restarts (as for the web server).
"""

from __future__ import annotations

from typing import Any

from ckan.lib import jobs as ckan_jobs


class Worker(ckan_jobs.Worker):
    def work(self, *args: Any, **kwargs: Any) -> Any:
        import dclab.rtdc_dataset.fmt_http  # noqa: F401  (inherited by every horse)

        return super().work(*args, **kwargs)

    def main_work_horse(self, job: Any, queue: Any) -> Any:
        # rq's own horse entry point, not CKAN's, which reloads the environment first
        return super(ckan_jobs.Worker, self).main_work_horse(job, queue)
