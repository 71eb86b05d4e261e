"""Job (queue dcor-normal): verified upload of a resource's file to its circle bucket."""

from __future__ import annotations

import logging

from .. import config, locks, placement, records

log = logging.getLogger(__name__)


def upload_resource(resource_id: str) -> str:
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    resource = records.show_resource(resource_id)
    package = records.show_package(resource["package_id"])
    if not package.get("owner_org"):
        raise records.JobError(
            f"Dataset {package['name']} has no organization (circle), so resource "
            f"{resource_id} has no circle bucket; add the dataset to a circle and run "
            "`ckan run-jobs-dcor-depot`"
        )
    path = placement.ckan_path(resource_id)
    if not path.is_file():
        raise records.JobError(f"The file of resource {resource_id} is missing at {path}")
    location = placement.object_location(store, package["owner_org"], resource_id)
    with locks.upload_lock(resource_id):
        result = store.upload_verified(
            path,
            *location,
            sha256=records.claimed_sha256(resource),
            public=placement.is_public(package, resource),
        )
    records.patch_resource(resource_id, records.s3_fields(store, "resource", result))
    # the dataset may have changed visibility while the file was uploaded, and
    # the visibility job queued for that change may have run before the object
    # existed: apply the visibility it has now
    placement.align_visibility(store, package["id"], [resource_id])
    message = (
        f"resource {resource_id}: {'already verified at' if result.skipped else 'uploaded to'} "
        f"{location} ({result.size} bytes, sha256 {result.sha256})"
    )
    log.info(message)
    return message
