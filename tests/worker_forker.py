"""Burst workers for the tests, without starting CKAN for each one.

``ckan dcor-depot-worker --burst`` spends about 3 s of CPU before its first job:
CKAN's environment and dclab's import. The tests run such a worker dozens of
times (``tests.conftest.run_worker``). This process, started once per run with
the run's ini, loads what the worker command loads, once; then for each line on
stdin (the path of a log file) it forks a burst worker on the depot's queues,
its output going to that file, and answers with its exit status. The fork runs
the command's own code (``jobs.worker.Worker``) in a process of its own, with the
configuration of the ini file, as the README's worker forks a process per job.

Usage: python tests/worker_forker.py INI
"""

from __future__ import annotations

import os
import sys
import traceback


def main(ini: str) -> None:
    from ckan.cli import load_config
    from ckan.config.middleware import make_app

    make_app(load_config(ini))
    import ckan.lib.redis
    import ckan.model as model
    import dclab.rtdc_dataset.fmt_http  # noqa: F401 - what the worker's warm-up imports

    from ckanext.dcor_depot.jobs.queue import QUEUES
    from ckanext.dcor_depot.jobs.worker import Worker

    model.meta.engine.dispose()
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            log = os.open(line.strip(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(log, 1)
            os.dup2(log, 2)
            ckan.lib.redis._connection_pool = None  # connections of its own
            status = 0
            try:
                Worker(list(QUEUES)).work(burst=True, with_scheduler=True)  # as the command
            except BaseException:  # noqa: BLE001 - reported as the worker's exit status
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
