"""Job (queue dcor-normal): a verified local copy of an object uploaded straight to S3."""

from __future__ import annotations

import logging

from .. import config, errors, placement, resource_fields
from ..model import ckan_rows
from ..storage.depot import write_verified
from ..storage.s3 import sha256_of_file

log = logging.getLogger(__name__)


def backup_resource(resource_id: str) -> str:
    """Copy the resource's object to ``<local_backup_location>/RES/OUR/CEID``.

    The copy must have the SHA-256 recorded on the resource; a verified copy
    is kept, a copy with other bytes is replaced.
    """
    path = placement.backup_path(resource_id)
    store = config.object_store()
    if path is None or store is None:
        return "no local backup (dcor_object_store.local_backup_location is not set)"
    resource = ckan_rows.show_resource(resource_id)
    if resource.get(resource_fields.S3_UPLOAD_ERROR_FIELD):
        raise errors.JobError(f"No backup: {resource[resource_fields.S3_UPLOAD_ERROR_FIELD]}")
    placed = placement.file_of(store, resource["package_id"], resource_id)
    if placed.recorded is None:
        raise errors.JobError(
            f"The SHA-256 of resource {resource_id}'s object is not recorded yet, so a copy "
            "cannot be verified; run `ckan run-jobs-dcor-depot` once the checksum job ran"
        )
    sha256 = placed.sha256
    if path.is_file() and sha256_of_file(path) == sha256:
        return f"resource {resource_id}: verified backup already at {path}"
    replaced = path.exists()
    size = write_verified(path, store.read_object(*placed.recorded), sha256)
    message = f"resource {resource_id}: backed up to {path} ({size} bytes, sha256 {sha256})"
    if replaced:
        message += "; it replaced a copy with other bytes"
        log.warning(message)
    else:
        log.info(message)
    return message
