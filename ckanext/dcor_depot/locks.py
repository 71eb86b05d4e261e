"""Who may work on one file, or run one command, at a time: leases in Redis (``leases.py``).

They hold between processes on any host that shares CKAN's Redis, and leave
nothing behind: a lease expires when its holder dies and is deleted when it
is released.
"""

from __future__ import annotations

from . import config
from .leases import Lease


def upload_lock(resource_id: str) -> Lease:
    """Serializes the uploads of one resource's objects (jobs and commands, any host)."""
    return Lease(f"upload:{resource_id}", wait=_wait())


def dataset_lock(package_id: str, wait: float = 0.0) -> Lease:
    """Serializes the work that decides where a dataset's objects lie and who may read
    them (convergence, moves); ``wait``: seconds to wait for another holder."""
    return Lease(f"dataset:{package_id}", wait=wait)


def depot_lock(resource_id: str) -> Lease:
    """Serializes the moves of one resource's file into the depot (any host)."""
    return Lease(f"depot:{resource_id}", wait=_wait())


#: Seconds the lease of a command run lives without renewal.
COMMAND_LEASE_SECONDS = 10.0


def command_lock(name: str) -> Lease:
    """One run of an operator command at a time, on any host; a second one is refused.

    It waits one lease period first: the lease of a run that was killed has
    expired by then.
    """
    return Lease(f"command:{name}", seconds=COMMAND_LEASE_SECONDS, wait=COMMAND_LEASE_SECONDS + 1)


def _wait() -> float:
    """A job waits for another holder at most as long as a job may run."""
    return float(config.longest_job_timeout())
