"""Step of the ``file`` job (``resource_jobs.py``; on dcor-normal when S3 is on, else on
dcor-short): move an uploaded file into the user depot, symlink it from CKAN."""

from __future__ import annotations

import logging

from .. import config, locks, placement, records
from ..storage.depot import depot_path_for, move_into_depot

log = logging.getLogger(__name__)


def symlink_resource(resource_id: str) -> str:
    resource = records.show_resource(resource_id)
    dataset = records.dataset_names(resource["package_id"])
    records.record_file(dataset.id, resource_id)  # known, also if CKAN loses the resource
    depot_path = depot_path_for(
        depots_path=config.depots_path(),
        users_depot_name=config.users_depot_name(),
        user_name=dataset.creator or "unknown-user",
        org_name=dataset.organization or "no-circle",
        package_id=dataset.id,
        package_name=dataset.name,
        resource_id=resource_id,
        # an upload without a name is named after its file
        resource_name=resource.get("name") or (resource.get("url") or "").rsplit("/", 1)[-1],
    )
    ckan_path = placement.ckan_path(resource_id)
    if not ckan_path.is_file():
        raise placement.missing_local_file(resource_id, ckan_path)
    result = move_into_depot(ckan_path, depot_path, locks.depot_lock(resource_id))
    message = f"resource {resource_id}: {result.action} to {result.depot_path}"
    log.info(message)
    return message
