"""Job (queue dcor-converge): one search-index update of a dataset for the fields jobs recorded.

The jobs write what they record straight into the resource rows
(:func:`patch_resources`, ``model/ckan_rows.py``), at a cost that does not grow with
the dataset, and ask for an index update here; however many patches a dataset gets,
one update is waiting at a time. Until it ran, ``package_show`` reads the
database (the dataset's ``metadata_modified`` differs from the index's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ckan.model as model
from ckan.lib import search

from ..model import ckan_rows
from . import queue


def patch_resources(
    package_id: str, fields: Mapping[str, Mapping[str, Any]]
) -> tuple[set[str], set[str]]:
    """:func:`ckan_rows.patch_resources`, then one index update of the dataset when a
    resource changed; returns the ids of those that changed and of those not active."""
    changed, gone = ckan_rows.patch_resources(package_id, fields)
    if changed:
        request_index(package_id)
    return changed, gone


def patch_resource(resource_id: str, fields: Mapping[str, Any]) -> bool:
    """:func:`ckan_rows.patch_resource`, then one index update when it changed."""
    package_id, changed = ckan_rows.patch_resource(resource_id, fields)
    if changed:
        request_index(package_id)
    return changed


def request_index(package_id: str) -> None:
    """Queue an index update of the dataset, unless one is waiting (logs a Redis error)."""
    queue.queue_or_log(_enqueue, package_id)


def _enqueue(package_id: str) -> None:
    queue.enqueue_unless_waiting("index", package_id)


def index_dataset(package_id: str) -> str:
    """The job: index the dataset as the database has it now.

    Under the dataset's row lock, as CKAN's own updates index it: a user's
    update made while the job reads waits, and indexes after the job, so the
    job never writes an older copy over it.
    """
    try:
        ckan_rows.lock_dataset(package_id)
        search.rebuild(package_id)
    finally:
        model.Session.rollback()  # releases the lock; the job wrote nothing
    return f"dataset {package_id}: search index updated"
