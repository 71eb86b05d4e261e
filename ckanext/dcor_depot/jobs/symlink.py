"""Step of the ``file`` job (``resource_jobs.py``; on dcor-normal when S3 is on, else on
dcor-short): move an uploaded file into the user depot, symlink it from CKAN."""

from __future__ import annotations

import logging

from .. import locks, placement
from ..model import ckan_rows, depot_files
from ..storage.depot import move_into_depot

log = logging.getLogger(__name__)


def symlink_resource(resource_id: str) -> str:
    resource = ckan_rows.show_resource(resource_id)
    dataset = ckan_rows.dataset_names(resource["package_id"])
    depot_files.record_file(dataset.id, resource_id)  # known, also if CKAN loses the resource
    depot_path = placement.depot_path(dataset, resource)
    ckan_path = placement.ckan_path(resource_id)
    if not ckan_path.is_file():
        raise placement.missing_local_file(resource_id, ckan_path)
    result = move_into_depot(ckan_path, depot_path, locks.depot_lock(resource_id))
    message = f"resource {resource_id}: {result.action} to {result.depot_path}"
    log.info(message)
    return message
