"""What the commands share: the object store or a clear refusal, and output helpers."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click
import redis

from .. import config, locks
from ..leases import LeaseLost
from ..storage.s3 import ObjectStore


def require_object_store(parallel_uploads: int = 1) -> ObjectStore:
    """The configured object store; exits 1 saying what to set when there is none."""
    settings = config.s3_settings()
    if settings is None:
        raise click.ClickException(
            "No object store configured: set dcor_object_store.endpoint_url, "
            ".access_key_id and .secret_access_key in the ini file"
        )
    if parallel_uploads == 1:
        return config.object_store()
    return ObjectStore(settings, parallel_uploads=parallel_uploads)


@contextlib.contextmanager
def single_run(name: str) -> Iterator[Callable[[], bool]]:
    """One run of the command ``name`` at a time, on any host sharing CKAN's Redis;
    exits 1 when another one runs, and when the run lost its lock while it ran.

    Yields a function that says whether the lock is lost (a long run stops then).
    """
    lease = locks.command_lock(name)
    if not lease.acquire():
        raise click.ClickException(
            f"Another {name} is running ({lease.key} is held by another process); "
            "wait for it to end"
        )

    def lost() -> bool:
        try:
            lease.ensure_held()
        except (LeaseLost, redis.exceptions.RedisError):
            return True
        return False

    try:
        yield lost
        if lost():
            raise click.ClickException(
                f"This {name} lost its lock {lease.key} while it ran (Redis unreachable, or "
                "the process paused longer than a lease), so another run may have worked at "
                "the same time: check the output and run it again"
            )
    finally:
        lease.release()


def exit_on_failures(failures: list[str]) -> None:
    """Print each failure (stderr) and exit 1 when there is any."""
    for failure in failures:
        click.echo(f"FAILED {failure}", err=True)
    if failures:
        sys.exit(1)


#: ``--modified-days N`` of the commands that work through the resources.
modified_days_option = click.option(
    "--modified-days",
    type=click.IntRange(min=0),
    default=None,
    help="Only resources whose dataset or resource changed in the last N days.",
)
