"""The objects of a dataset's files, as ``ckan dcor-list-s3-objects-for-dataset`` lists them."""

from __future__ import annotations

import dataclasses

import ckan.model as model

from .. import errors, placement
from ..storage.s3 import ARTIFACTS, ObjectStore


@dataclasses.dataclass(frozen=True)
class ListedObject:
    """One object of a file: where it is recorded (or belongs), and what the store says."""

    bucket: str
    key: str
    #: "public", "private" or "missing"
    state: str
    size: int | None
    #: a deleted resource, a move to the circle's bucket that is pending, not verified yet
    notes: list[str]


def dataset_objects(store: ObjectStore, dataset: str) -> tuple[str, list[ListedObject], list[str]]:
    """The dataset's name, the objects of every file of it (resources, deleted ones too,
    and artifacts), and one line per file the depot cannot place. :class:`errors.JobError`
    when there is no such dataset or it has no circle."""
    package = model.Package.get(dataset)
    if package is None:
        raise errors.JobError(f"There is no dataset {dataset!r}: check its name or id")
    placement.require_circle(package.name, package.owner_org)
    files = placement.dataset_files(store, package.id)
    listed, failures = [], []
    for placed in _every_artifact(store, files):
        if placed.problem:
            failures.append(f"resource {placed.resource_id} ({placed.artifact}): {placed.problem}")
        if placed.location is None:
            continue
        bucket, key = placed.location
        info = store.object_info(bucket, key)
        visible = store.visibility(bucket, key) if info else None
        state = "missing" if visible is None else ("public" if visible else "private")
        notes = []
        if placed.resource_state != "active":
            notes.append(f"resource {placed.resource_state}")
        if placed.needs_move:
            notes.append(f"to be moved to {placed.wanted.bucket}")
        if placed.recorded is None and placed.artifact == "resource":
            notes.append("not uploaded or verified yet")
        listed.append(ListedObject(bucket, key, state, info.size if info else None, notes))
    return package.name, listed, failures


def _every_artifact(
    store: ObjectStore, files: placement.DatasetFiles
) -> list[placement.PlacedFile]:
    """The files of each resource with a file, and where its missing artifacts would be."""
    listed = []
    for placed in files.files:
        if placed.artifact != "resource" and files.file(placed.resource_id) is None:
            listed.append(placed)  # a recorded artifact of a resource without its own file
        if placed.artifact != "resource":
            continue
        for artifact in ARTIFACTS:
            found = files.file(placed.resource_id, artifact)
            if found is None and placed.wanted is not None:
                wanted = placement.object_location(
                    store, files.owner_org, placed.resource_id, artifact
                )
                found = dataclasses.replace(placed, artifact=artifact, wanted=wanted, recorded=None)
            if found is not None:
                listed.append(found)
    return listed
