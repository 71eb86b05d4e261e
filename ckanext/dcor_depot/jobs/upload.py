"""Job (queue dcor-normal): verified upload of a resource's file to its circle bucket."""

from __future__ import annotations

import datetime
import functools
import logging

from .. import config, locks, placement, resource_fields
from ..leases import connection, redis_key
from ..model import ckan_rows
from ..storage.s3 import S3Error
from .verified import record_verified_file

log = logging.getLogger(__name__)


def upload_resource(resource_id: str) -> str:
    """Upload the file at CKAN's path, verified, then record it and apply its visibility.

    The object is private until it is recorded (an object nobody records is
    never public); then it gets the visibility its dataset has at that moment.
    """
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    resource = ckan_rows.show_resource(resource_id)
    package = ckan_rows.dataset_names(resource["package_id"])
    placed = placement.file_of(store, package.id, resource_id)
    placed.require_wanted(package.name)
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
        # under the lease, an unfinished upload of this key is a dead holder's: one was
        # started (the mark) and did not end
        now = datetime.datetime.now(datetime.timezone.utc)
        bucket, key = placed.wanted.bucket, placed.wanted.key
        trusted = _ensure_bucket(store, bucket)
        mark = redis_key("upload", resource_id)
        pipe = connection().pipeline()
        pipe.getset(mark, "1").expire(mark, UPLOAD_MARK_SECONDS)
        if pipe.execute()[0]:
            aborted = store.prune_multipart_uploads(bucket, now, key=key)
            if aborted:
                log.info("resource %s: aborted %d unfinished uploads", resource_id, len(aborted))
        upload = functools.partial(
            store.upload_verified,
            path,
            *placed.wanted,
            sha256=resource_fields.claimed_sha256(resource),
            headers=resource_fields.object_headers(resource),
        )
        try:
            result = upload()
        except S3Error:
            if not trusted:
                raise
            # the bucket was taken as ready on another horse's word: make sure, once
            connection().delete(redis_key("bucket", bucket))
            store.ensure_bucket(bucket, again=True)
            result = upload()
        connection().delete(mark)
    record_verified_file(store, package.id, resource_id, result)
    message = (
        f"resource {resource_id}: {'already verified at' if result.skipped else 'uploaded to'} "
        f"{placement.ObjectLocation(result.bucket, result.key)} ({result.size} bytes, "
        f"sha256 {result.sha256})"
    )
    log.info(message)
    return message


#: Seconds for which an upload job that did not end (killed, or failed) leaves its mark:
#: the next upload job of the file then aborts the unfinished S3 upload it left (later,
#: the bucket's lifecycle rule and ``dcor-prune-stale-multipart-uploads`` do).
UPLOAD_MARK_SECONDS = 7 * 86400


#: Seconds for which the work horses take a bucket that one of them made ready (created,
#: the extension's policy and lifecycle rule in place) as ready.
BUCKET_READY_SECONDS = 600


def _ensure_bucket(store, bucket: str) -> bool:
    """``ObjectStore.ensure_bucket`` once per :data:`BUCKET_READY_SECONDS` for all workers:
    every job runs in a new work horse, whose store has forgotten the buckets it made
    ready (three requests per job otherwise). True: taken as ready from Redis."""
    key = redis_key("bucket", bucket)
    if connection().get(key):
        store.bucket_is_ready(bucket)
        return True
    store.ensure_bucket(bucket)
    connection().set(key, "1", ex=BUCKET_READY_SECONDS)
    return False


def _verified(store, placed: placement.PlacedFile) -> bool:
    """Its object is recorded (verified) and still there."""
    return bool(placed.recorded) and store.object_info(*placed.recorded) is not None
