"""Job (queue dcor-normal): move a dataset's objects into the bucket of its current circle.

Queued by the convergence job when a dataset changed circle. Each object is
copied server-side and checked against its record
(:meth:`ObjectStore.copy_verified`). Under the dataset's lease the record is
checked again (the dataset may have moved on), the new location recorded
with the old one as ``moved_from``, and the convergence pass tags the new
object and deletes the old one. A shallow copy (up to 5 GiB, about 0.2 s per
GiB on Ceph RGW) is made under the lease too, because it carries the
source's tags; a multipart copy of a larger object is made before, private,
so that a long copy never holds the lease. Killed at any step, every file
stays downloadable from its recorded location, no copy is more readable than
its file, and a rerun finishes the move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import config, errors, placement
from ..model import depot_files
from ..storage.s3 import ObjectStore, UploadResult
from . import converge, index

log = logging.getLogger(__name__)


def move_dataset(package_id: str) -> str:
    """The job: move every object of the dataset that lies in another circle's bucket."""
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    moved, size = move_objects(store, package_id)
    message = f"dataset {package_id}: {moved} objects ({size} bytes) moved to its circle's bucket"
    log.info(message)
    return message


def move_objects(
    store: ObjectStore,
    package_id: str,
    progress: Callable[[placement.PlacedFile], None] | None = None,
) -> tuple[int, int]:
    """Move the objects that need it, one after the other; returns their count and bytes."""
    moved, total, urls, tried = 0, 0, [], set()
    while True:
        files = placement.dataset_files(store, package_id)
        todo = [placed for placed in files.files if placed.needs_move]
        if not todo:
            break
        placed = todo[0]
        attempt = (placed.resource_id, placed.artifact, placed.recorded, placed.wanted)
        if attempt in tried:
            raise errors.JobError(
                f"The {placed.artifact} object of resource {placed.resource_id} could not be "
                f"recorded at {placed.wanted}; see the log"
            )
        tried.add(attempt)
        if progress is not None:
            progress(placed)
        if move_object(store, package_id, placed):
            moved += 1
            total += placed.size or 0
            urls.append((placed, placed.wanted))
    show_moved(store, package_id, urls)
    return moved, total


def copy_to(
    store: ObjectStore, placed: placement.PlacedFile, target: placement.ObjectLocation, rehash=False
) -> UploadResult:
    """A server-side copy of a file's recorded object into ``target``'s bucket, verified
    against its record (``rehash``: by reading the copy's bytes)."""
    source = placed.recorded
    return store.copy_verified(
        source.bucket,
        source.key,
        target.bucket,
        placed.sha256,
        placed.size,
        placed.etag,
        rehash=rehash,
    )


def record_moved(package_id: str, placed: placement.PlacedFile, result: UploadResult) -> None:
    """Record a file's object at its new location; the old copy (``moved_from``) is
    deleted by the convergence pass that follows, under the dataset's lease."""
    depot_files.record_object(
        package_id, placed.resource_id, placed.artifact, result, moved_from=placed.recorded.bucket
    )


def show_moved(
    store: ObjectStore,
    package_id: str,
    moved: list[tuple[placement.PlacedFile, placement.ObjectLocation]],
) -> None:
    """The ``s3_url`` of the moved files of active resources (what ``resource_show``
    says; the table is what counts)."""
    urls = {
        placed.resource_id: {"s3_url": placement.s3_url(store, target)}
        for placed, target in moved
        if placed.artifact == "resource" and placed.resource_state == "active"
    }
    if urls:
        index.patch_resources(package_id, urls)


def move_object(store: ObjectStore, package_id: str, placed: placement.PlacedFile) -> bool:
    """Copy one object to where it belongs and record it there; False if the dataset moved on.

    A shallow copy (one CopyObject, which on Ceph RGW copies the source's tags
    too) is made under the dataset's lease, so that it is never more readable
    than the recorded object; a multipart copy (private) is made before.
    """
    source, target = placed.recorded, placed.wanted

    shallow = store.shallow_copy(placed.size or 0)
    result = None if shallow else copy_to(store, placed, target)
    with converge.dataset_lease(package_id):
        now = placement.dataset_files(store, package_id, [placed.resource_id]).file(
            placed.resource_id, placed.artifact
        )
        still = now is not None and (now.recorded, now.wanted) == (source, target)
        if still:
            result = result or copy_to(store, placed, target)
            record_moved(package_id, placed, result)
        elif result is not None and (now is None or now.recorded != target):
            store.delete_object(*target)  # a copy nobody wants any more
        converge.converge_files(
            store,
            placement.dataset_files(store, package_id, [placed.resource_id]),
            verified=frozenset({target} if still else ()),
        )
    return still
