"""Moving a dataset to another circle (``ckan dcor-move-dataset-to-circle``).

Every object the dataset records is first copied to the new circle's bucket
and verified against its recorded SHA-256 (:meth:`ObjectStore.copy_verified`);
only when all copies are verified does the dataset change circle in CKAN, and
the new locations are recorded under the dataset's lease, after which the
convergence pass tags the new objects and deletes the old ones. A dataset
whose files cannot all be verified in the target is not moved, and the copies
made so far are removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ckan.model as model

from .. import placement
from ..jobs import converge, move
from ..model import ckan_rows
from ..storage.s3 import ObjectStore, S3Error, UploadResult


class CircleMoveError(Exception):
    """The dataset was not moved; the message says why."""


@dataclasses.dataclass
class CircleMove:
    name: str
    source: str
    target: str
    copied: int = 0
    already: int = 0
    bytes: int = 0
    converged: converge.Converged | None = None


def plan(store: ObjectStore, dataset: str, circle: str) -> tuple[model.Package, model.Group]:
    """The dataset and the circle, or :class:`CircleMoveError` saying what is wrong."""
    package = model.Package.get(dataset)
    if package is None:
        raise CircleMoveError(f"There is no dataset {dataset!r}: check its name or id")
    if package.state == "deleted":
        raise CircleMoveError(f"Dataset {package.name} is deleted: restore it first")
    group = model.Group.get(circle)
    if group is None or not group.is_organization or group.state != "active":
        raise CircleMoveError(
            f"There is no active circle (organization) {circle!r}: check its name or id"
        )
    if package.owner_org == group.id:
        raise CircleMoveError(f"Dataset {package.name} is already in circle {group.name}")
    return package, group


def move_to_circle(
    store: ObjectStore,
    dataset: str,
    circle: str,
    rehash: bool = False,
    progress: Callable[[int], None] | None = None,
) -> CircleMove:
    """Copy, verify, switch circle, record, converge; all under the dataset's lease.

    Holding the lease throughout keeps every copy exactly as readable as its
    file (a shallow copy carries the source's tags): a visibility change of
    the dataset meanwhile is converged when the move ends.
    """
    package, group = plan(store, dataset, circle)
    source = model.Group.get(package.owner_org) if package.owner_org else None
    report = CircleMove(package.name, source.name if source else "(none)", group.name)
    package_id, target_org = package.id, group.id
    with converge.dataset_lease(package_id):
        copies = _copy_all(store, package_id, target_org, report, rehash, progress)
        ckan_rows.patch_dataset(package_id, owner_org=target_org)
        for placed, result in copies:
            move.record_moved(package_id, placed, result)
        report.converged = converge.converge_files(
            store, placement.dataset_files(store, package_id)
        )
    moved = [(p, placement.ObjectLocation(r.bucket, r.key)) for p, r in copies]
    move.show_moved(store, package_id, moved)
    return report


def _copy_all(
    store: ObjectStore,
    package_id: str,
    target_org: str,
    report: CircleMove,
    rehash: bool,
    progress: Callable[[int], None] | None,
) -> list[tuple[placement.PlacedFile, UploadResult]]:
    """Verified copies of every recorded object in the target; none left if one fails."""
    files = [f for f in placement.dataset_files(store, package_id).files if f.recorded]
    copies: list[tuple[placement.PlacedFile, UploadResult]] = []
    try:
        for placed in files:
            target = placement.object_location(
                store, target_org, placed.resource_id, placed.artifact
            )
            if target == placed.recorded:
                continue
            result = move.copy_to(store, placed, target, rehash=rehash)
            copies.append((placed, result))
            report.already += result.skipped
            report.copied += not result.skipped
            report.bytes += placed.size or 0
            if progress is not None:
                progress(placed.size or 0)
    except S3Error as exc:
        for _copied, result in copies:
            if not result.skipped:
                store.delete_object(result.bucket, result.key)
        raise CircleMoveError(
            f"Dataset {report.name} was not moved: the {placed.artifact} file of resource "
            f"{placed.resource_id} could not be verified in circle {report.target}'s bucket "
            f"({exc}); the copies made were removed"
        ) from exc
    return copies
