"""Job (queue dcor-normal): the SHA-256 of an object a client uploaded straight to S3."""

from __future__ import annotations

import logging

from .. import config, errors, locks, placement, resource_fields
from ..model import ckan_rows, grants
from ..storage.s3 import MD5_METADATA_KEY, ObjectStore, S3Error, UploadResult
from . import converge, index
from .verified import record_verified_file

log = logging.getLogger(__name__)


def record_object_sha256(resource_id: str) -> str:
    """Stream the object, record its SHA-256 and size on the resource, apply its visibility.

    The object stays private until this is done. It is refused, for good
    (:data:`resource_fields.S3_UPLOAD_ERROR_FIELD` says why), when its bytes contradict
    what the client declared: the MD5 given for a multipart upload, or a
    ``sha256`` given at registration.
    """
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    resource = ckan_rows.show_resource(resource_id)
    package = ckan_rows.dataset_names(resource["package_id"])
    location = placement.file_of(store, package.id, resource_id).require_location(package.name)
    with locks.upload_lock(resource_id):
        info = store.object_info(*location)
        if info is None:
            raise errors.JobError(f"The object of resource {resource_id} is missing at {location}")
        claimed_md5 = info.metadata.get(MD5_METADATA_KEY)
        hashes = store.hash_object(*location, md5=claimed_md5 is not None)
        declared = {"MD5": (claimed_md5, hashes.md5)}
        claimed_sha256 = info.metadata.get(resource_fields.DECLARED_SHA256_METADATA)
        declared["SHA-256"] = (claimed_sha256, hashes.sha256)
        for name, (claimed, actual) in declared.items():
            if claimed and claimed != actual:
                problem = (
                    f"The uploaded file of resource {resource_id} ({location}) has {name} "
                    f"{actual}, but the client declared {claimed}: the upload is corrupt. "
                    "Delete the resource and upload the file again"
                )
                # the claim is not the file's hash: it does not stay in ``sha256``
                fields = {resource_fields.S3_UPLOAD_ERROR_FIELD: problem, "sha256": None}
                index.patch_resource(resource_id, fields)
                converge.align_resource(store, package.id, resource_id)  # private
                raise errors.JobError(problem)
        # always rewritten: only the issued metadata stays, with how the file is
        # served; whatever else the client sent along (an ACL, tags, metadata, a
        # website redirect) is dropped
        store.record_sha256(
            *location,
            hashes.sha256,
            hashes.size,
            resource_fields.object_headers(resource),
            keep=resource_fields.ISSUED_METADATA,
        )
    result = UploadResult(*location, hashes.size, hashes.sha256, info.etag)
    # recording the hash dropped the object's tags: they are applied again
    record_verified_file(store, package.id, resource_id, result)
    _remove_staged(store, resource_id)
    message = f"resource {resource_id}: {location} has {hashes.size} bytes, sha256 {hashes.sha256}"
    log.info(message)
    return message


def _remove_staged(store: ObjectStore, resource_id: str) -> None:
    """The staged upload of a registration that committed (its resource exists): the
    registration copied it into place, so it goes. Until the grant expires its row
    refuses another registration; whatever its URLs stage meanwhile is never served and
    goes with the grant (``dcor-prune-orphaned-objects``)."""
    grant = grants.get(resource_id)
    if grant is None or grant.state != grants.REGISTERED:
        return
    if grant.bucket != store.settings.staging_bucket:
        return
    try:
        store.delete_object(grant.bucket, grant.key)
    except S3Error as exc:  # the file is verified; the prune removes it with the grant
        log.warning("Could not remove the staged upload of resource %s: %s", resource_id, exc)
