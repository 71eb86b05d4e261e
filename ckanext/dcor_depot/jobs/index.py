"""Job (queue dcor-converge): one search-index update of a dataset for the fields jobs recorded.

The jobs write what they record straight into the resource rows
(``records.patch_resources``), at a cost that does not grow with the dataset,
and ask for an index update here; however many patches a dataset gets, one
update is waiting at a time. Until it ran, ``package_show`` reads the
database (the dataset's ``metadata_modified`` differs from the index's).
"""

from __future__ import annotations

import ckan.model as model
from ckan.lib import search

from .. import records
from . import queue


def request_index(package_id: str) -> None:
    """Queue an index update of the dataset, unless one is waiting (logs a Redis error)."""
    queue.queue_or_log(_enqueue, package_id)


def _enqueue(package_id: str) -> None:
    queue.enqueue_unless_waiting(index_dataset, "index", package_id)


def index_dataset(package_id: str) -> str:
    """The job: index the dataset as the database has it now.

    Under the dataset's row lock, as CKAN's own updates index it: a user's
    update made while the job reads waits, and indexes after the job, so the
    job never writes an older copy over it.
    """
    try:
        records.lock_dataset(package_id)
        search.rebuild(package_id)
    finally:
        model.Session.rollback()  # releases the lock; the job wrote nothing
    return f"dataset {package_id}: search index updated"
