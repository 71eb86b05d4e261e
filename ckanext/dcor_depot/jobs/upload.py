"""Job (queue dcor-normal): verified upload of a resource's file to its circle bucket."""

from __future__ import annotations

import datetime
import logging

from .. import config, locks, placement, records
from . import converge

log = logging.getLogger(__name__)


def upload_resource(resource_id: str) -> str:
    """Upload the file at CKAN's path, verified, then record it and apply its visibility.

    The object is private until it is recorded (an object nobody records is
    never public); then it gets the visibility its dataset has at that moment.
    """
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    resource = records.show_resource(resource_id)
    package = records.dataset_names(resource["package_id"])
    placed = placement.file_of(store, package.id, resource_id)
    if placed.wanted is None:
        raise placement.NoCircle(package.name)
    if _verified(store, placed):
        return f"resource {resource_id}: already verified at {placed.recorded}"
    path = placed.local
    if path is None or not path.is_file():
        raise placement.missing_local_file(resource_id, path)
    with locks.upload_lock(resource_id):
        # read again under the lease: another holder may have recorded it meanwhile
        placed = placement.file_of(store, package.id, resource_id)
        if _verified(store, placed):
            return f"resource {resource_id}: already verified at {placed.recorded}"
        # under the lease, an unfinished upload of this key is a dead holder's
        now = datetime.datetime.now(datetime.timezone.utc)
        bucket, key = placed.wanted.bucket, placed.wanted.key
        store.ensure_bucket(bucket)
        aborted = store.prune_multipart_uploads(bucket, now, key=key)
        if aborted:
            log.info("resource %s: aborted %d unfinished uploads", resource_id, len(aborted))
        result = store.upload_verified(
            path,
            *placed.wanted,
            sha256=records.claimed_sha256(resource),
            headers=records.object_headers(resource),
        )
        records.record_object(package.id, resource_id, "resource", result)
    # the dataset may have changed visibility while the file was uploaded
    converge.align_resource(store, package.id, resource_id)
    records.patch_resource(resource_id, records.s3_fields(store, "resource", result))
    message = (
        f"resource {resource_id}: {'already verified at' if result.skipped else 'uploaded to'} "
        f"{placement.ObjectLocation(result.bucket, result.key)} ({result.size} bytes, "
        f"sha256 {result.sha256})"
    )
    log.info(message)
    return message


def _verified(store, placed: placement.PlacedFile) -> bool:
    """Its object is recorded (verified) and still there."""
    return bool(placed.recorded) and store.object_info(*placed.recorded) is not None
