"""CKAN's commands for the tests, forked from one process that loaded CKAN once.

Starting ``ckan`` costs about 2 s of CPU before the command runs: the imports of
CKAN, the extension and dclab. The tests run such commands dozens of times. This
process, started once per run, pays that once; then for each request on stdin
(one JSON object per line) it forks a child that runs the command, its output going
to files, and answers with the child's exit status. The fork runs the command's
own code in a process of its own, with the configuration of its ini file.

- ``python tests/forker.py worker INI``: the request is ``{"log": PATH}``: a burst
  worker on the depot's queues (``ckan dcor-depot-worker --burst``). CKAN's
  environment is loaded from INI (the run's) once, before the forks, as the
  README's worker forks a process per job.
- ``python tests/forker.py command``: the request is ``{"args": [...], "stdout":
  PATH, "stderr": PATH, "env": {...}}``: ``ckan ARGS`` (its own ``-c INI`` first) in
  that environment. Only the imports are done before the fork: each command
  loads its ini, as ``ckan`` does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable


def forked(stdout: str, stderr: str, run: Callable[[], object]) -> int:
    """``run()`` in a child with its output into these files; the child's exit status
    (as a process's: ``sys.exit``'s code, 1 after an exception and its traceback)."""
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the forker's requests
        for fd, path in ((1, stdout), (2, stderr)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), fd)
        status = 0
        try:
            run()
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                status = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                status = 1
        except BaseException:  # noqa: BLE001 - reported as the process's exit status
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _workers(ini: str) -> Callable[[dict], int]:
    from ckan.cli import load_config
    from ckan.config.middleware import make_app

    make_app(load_config(ini))
    import ckan.lib.redis
    import ckan.model as model
    import dclab.rtdc_dataset.fmt_http  # noqa: F401 - what the worker's warm-up imports

    from ckanext.dcor_depot.jobs.queue import QUEUES
    from ckanext.dcor_depot.jobs.worker import Worker

    model.meta.engine.dispose()

    def work() -> None:
        ckan.lib.redis._connection_pool = None  # connections of its own
        Worker(list(QUEUES)).work(burst=True, with_scheduler=True)  # as the command

    return lambda request: forked(request["log"], request["log"], work)


def _commands() -> Callable[[dict], int]:
    import ckan.cli
    import ckan.cli.cli

    # the loggers of a new ``ckan`` process when it reads the ini's logging set-up, which
    # disables them (``fileConfig``); the modules imported here early would lose theirs
    fresh = set(logging.root.manager.loggerDict)
    import ckan.config.middleware  # noqa: F401
    import dclab.rtdc_dataset.fmt_http  # noqa: F401

    import ckanext.dcor_depot.cli  # noqa: F401
    import ckanext.dcor_depot.plugin  # noqa: F401

    file_config = ckan.cli.loggingFileConfig

    def as_in_a_new_process(*args, **kwargs) -> None:
        file_config(*args, **kwargs)
        for name, logger in logging.root.manager.loggerDict.items():
            if name not in fresh and isinstance(logger, logging.Logger):
                logger.disabled = False

    ckan.cli.loggingFileConfig = as_in_a_new_process

    def run(request: dict) -> int:
        def command() -> None:
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = ["ckan", *request["args"]]
            ckan.cli.cli.ckan.main(args=request["args"], prog_name="ckan")

        return forked(request["stdout"], request["stderr"], command)

    return run


def main(mode: str, *args: str) -> None:
    run = _workers(*args) if mode == "worker" else _commands()
    print("ready", flush=True)
    for line in sys.stdin:
        print(run(json.loads(line)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
