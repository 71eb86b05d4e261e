"""Removing what the extension keeps of purged files, and orphaned objects
(``ckan dcor-prune-orphaned-objects``).

A purge (or CKAN dropping a deleted resource's row) makes a file's copies
unreadable at once (``jobs/converge.py``); they are removed here once they
have been kept for ``ckanext.dcor_depot.purge_retention_days``: the objects
(and old copies of moved ones), CKAN's path (a symlink, or the file), the
depot file behind it and the local backup copy. Objects in the circle buckets
that nothing accounts for are removed when they are older than that too.
Uploads granted by ``dcor_depot_upload_urls`` and never registered are
removed as soon as their URLs expired: the multipart upload aborted, the
object deleted, the grant forgotten; so is what is staged without a pending
grant (written again after its registration, say). Nothing that a resource
still records is removed.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

import ckan.model as model

from .. import config, errors, placement, resource_fields
from ..model import depot_files, grants
from ..storage.depot import remove_purged
from ..storage.s3 import ObjectStore, S3Error, circle_bucket_prefix
from . import sweep


@dataclasses.dataclass
class Pruned:
    files: int = 0
    objects: int = 0
    local: int = 0
    orphans: int = 0
    uploads: int = 0
    #: staged objects and multipart uploads without a pending grant
    staged: int = 0
    kept: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)


def prune(
    store: ObjectStore | None, dry_run: bool = False, echo: Callable[[str], None] = print
) -> Pruned:
    days = config.purge_retention_days()
    cutoff = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(
        days=days
    )
    pruned = Pruned()
    verb = "would remove" if dry_run else "removed"
    purged: dict[str, list[depot_files.FileRecord]] = {}
    for row in depot_files.file_records(purged_before=cutoff):
        purged.setdefault(row.resource_id, []).append(row)
    for resource_id, rows in purged.items():
        if model.Resource.get(resource_id) is not None:
            pruned.kept += 1  # CKAN has the resource again: it is not purged
            echo(f"kept resource {resource_id}: CKAN has a resource of this id")
            continue
        try:
            removed = _remove_copies(store, resource_id, rows, dry_run)
        except Exception as exc:  # noqa: BLE001 - one failed item, named; the rest goes on
            pruned.failures.append(f"resource {resource_id}: {errors.one_item_failed(exc)}")
            continue
        pruned.files += 1
        for what in removed:
            echo(f"{verb} {what} (resource {resource_id}, purged {rows[0].purged:%Y-%m-%d})")
            if what.startswith("s3://"):
                pruned.objects += 1
            else:
                pruned.local += 1
        if not dry_run:
            depot_files.forget_file(resource_id)
    if store is not None:
        _prune_expired_uploads(store, pruned, dry_run, echo)
        if store.uploader is not None:
            _prune_staging(store, pruned, dry_run, echo)
        try:
            for info in sweep.orphans(store):
                modified = info.last_modified.replace(tzinfo=None) if info.last_modified else None
                if modified is None or modified >= cutoff:
                    continue
                pruned.orphans += 1
                echo(f"{verb} orphan s3://{info.bucket}/{info.key} ({info.size} bytes)")
                if not dry_run:
                    store.delete_object(info.bucket, info.key)
        except S3Error as exc:
            pruned.failures.append(f"listing the circle buckets: {exc}")
    return pruned


def _prune_expired_uploads(
    store: ObjectStore, pruned: Pruned, dry_run: bool, echo: Callable[[str], None]
) -> None:
    """Remove expired, aborted and expired registered grants with what they left: the
    multipart upload aborted, the staged object deleted (without a HEAD, which an object
    written with a customer's encryption key refuses), and for a grant never registered
    the copy an interrupted registration put at the file's place. What a resource
    records is kept."""
    verb = "would remove" if dry_run else "removed"
    for grant in grants.expired():
        where = f"s3://{grant.bucket}/{grant.key}"
        recorded = depot_files.file_records(resource_ids=[grant.resource_id])
        # a resource of this id that records the object keeps it (the row goes anyway)
        keeps = any((row.bucket, row.key) == (grant.bucket, grant.key) for row in recorded)
        try:
            if not dry_run:
                locked = grants.get(grant.resource_id, lock=True)  # a registration waits
                if locked is None or not (locked.expired() or locked.state == grants.ABORTED):
                    model.Session.rollback()
                    continue
                if grant.upload_id:
                    store.abort_upload(grant.bucket, grant.key, grant.upload_id)
                if not keeps:
                    store.delete_object(grant.bucket, grant.key)
                if grant.state != grants.REGISTERED and not recorded:
                    _remove_unregistered_copy(store, grant)
                grants.remove(grant.resource_id)
                model.Session.commit()
        except Exception as exc:  # noqa: BLE001 - one failed item, named; the rest goes on
            failure = errors.one_item_failed(exc)
            pruned.failures.append(f"upload of resource {grant.resource_id} ({where}): {failure}")
            continue
        pruned.uploads += 1
        state = {
            grants.ABORTED: "aborted",
            grants.REGISTERED: f"registered, expired {grant.expires:%Y-%m-%d %H:%M} UTC",
        }.get(grant.state, f"expired {grant.expires:%Y-%m-%d %H:%M} UTC")
        kept = (
            "the object a resource records is kept"
            if keeps or grant.state == grants.REGISTERED
            else "never registered"
        )
        echo(f"{verb} upload {where} of resource {grant.resource_id} ({state}, {kept})")


def _remove_unregistered_copy(store: ObjectStore, grant: grants.Grant) -> None:
    """The copy at the file's place that a registration made before its transaction
    rolled back (no resource and no record of it): it belongs to nobody."""
    if grant.bucket != store.settings.staging_bucket or model.Resource.get(grant.resource_id):
        return
    if grant.package_id is None:
        # granted to a circle (DCOR-Aid): a registration copies into the circle's bucket,
        # for whichever of its datasets; nothing else has the grant's (issued) id
        location = placement.object_location(store, grant.owner_org, grant.resource_id)
        if store.object_info(*location) is not None:
            store.delete_object(*location)
        return
    package = model.Package.get(grant.package_id)
    if package is None or not package.owner_org:
        return
    location = placement.object_location(store, package.owner_org, grant.resource_id)
    placed = store.object_info(*location)
    if (
        placed is not None
        and placed.metadata.get(resource_fields.DATASET_METADATA) == grant.package_id
    ):
        store.delete_object(*location)


#: What is staged without a pending grant is removed once it is this old: a grant's
#: multipart upload is created a moment before the grant is committed.
STAGED_GRACE = datetime.timedelta(hours=1)


def _prune_staging(
    store: ObjectStore, pruned: Pruned, dry_run: bool, echo: Callable[[str], None]
) -> None:
    """Remove what is in the staging area without a pending grant: objects written again
    with a URL whose upload was registered or pruned, multipart uploads nobody completes."""
    verb = "would remove" if dry_run else "removed"
    staging = store.settings.staging_bucket
    before = datetime.datetime.now(datetime.timezone.utc) - STAGED_GRACE
    pending = {key for bucket, key in grants.pending_locations() if bucket == staging}
    try:
        for info in store.iter_objects(staging):
            if info.key in pending or (info.last_modified and info.last_modified >= before):
                continue
            pruned.staged += 1
            echo(f"{verb} staged s3://{staging}/{info.key} ({info.size} bytes, no pending grant)")
            if not dry_run:
                store.delete_object(staging, info.key)
        for upload in store.stale_multipart_uploads(staging, before):
            if upload.key in pending:
                continue
            pruned.staged += 1
            echo(f"{verb} staged multipart upload s3://{staging}/{upload.key} (no pending grant)")
            if not dry_run:
                store.abort_upload(staging, upload.key, upload.upload_id)
    except S3Error as exc:
        pruned.failures.append(f"the staging area s3://{staging}: {exc}")


def _remove_copies(
    store: ObjectStore | None, resource_id: str, rows: list[depot_files.FileRecord], dry_run: bool
) -> list[str]:
    removed = []
    for row in rows:
        for bucket in (row.bucket, row.moved_from):
            if bucket and store is not None and store.object_info(bucket, row.key) is not None:
                removed.append(f"s3://{bucket}/{row.key}")
                if not dry_run:
                    store.delete_object(bucket, row.key)
    paths = [placement.ckan_path(resource_id)]
    backup = placement.backup_path(resource_id)
    if backup is not None:
        paths.append(backup)
    for path in paths:
        removed += [str(p) for p in remove_purged(path, config.depots_path(), dry_run)]
    return removed


def prune_multipart(
    store: ObjectStore,
    cutoff: datetime.datetime,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> tuple[int, int, list[str]]:
    """Abort the multipart uploads started before ``cutoff`` in every circle bucket (a
    bucket that fails is one failed item, the others go on): the number of buckets, of
    uploads aborted (or that would be), and one line per bucket that failed."""
    buckets = store.list_buckets(prefix=circle_bucket_prefix(store.settings.bucket_name_template))
    total = 0
    failures = []
    for bucket in buckets:
        try:
            stale = store.prune_multipart_uploads(bucket, cutoff, dry_run=dry_run)
        except S3Error as exc:
            failures.append(f"{bucket}: {exc}")
            continue
        for upload in stale:
            echo(
                f"{'would abort' if dry_run else 'aborted'} {upload.bucket}:{upload.key} "
                f"(upload {upload.upload_id}, started {upload.initiated:%Y-%m-%d %H:%M} UTC)"
            )
        total += len(stale)
    return len(buckets), total, failures
