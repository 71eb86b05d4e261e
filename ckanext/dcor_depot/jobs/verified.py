"""Recording a verified object: the one way every path that stores a file records it.

The upload and checksum jobs, ``append-resource``, the migration to the object
store and the figshare import each verify an object against the file's SHA-256,
then call :func:`record_verified`: the extension's table first (what counts:
users cannot change it), then the visibility the dataset has now (an object is
uploaded private, and the dataset may have changed while it was), then the
resource fields that show it (``placement.s3_fields``), with one index update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import placement
from ..errors import JobError
from ..model import depot_files
from ..storage.s3 import ObjectStore, UploadResult
from . import converge, index


def record_verified(
    store: ObjectStore,
    package_id: str,
    objects: Mapping[str, Mapping[str, UploadResult]],
    fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> set[str]:
    """Record the verified objects of resources of one dataset (``{resource id: {artifact:
    result}}``), apply their visibility, and set their resource fields (with ``fields``,
    more fields by resource id). Returns the ids of the resources that are no longer
    active (their objects are recorded all the same: the prune removes them later)."""
    patch: dict[str, dict[str, Any]] = {}
    for resource_id, results in objects.items():
        for artifact, result in results.items():
            depot_files.record_object(package_id, resource_id, artifact, result)
            patch.setdefault(resource_id, {}).update(placement.s3_fields(store, artifact, result))
    if objects:
        converge.align_resource(store, package_id, *objects)
    for resource_id, more in (fields or {}).items():
        patch.setdefault(resource_id, {}).update(more)
    if not patch:
        return set()
    return index.patch_resources(package_id, patch)[1]


def record_verified_file(
    store: ObjectStore, package_id: str, resource_id: str, result: UploadResult
) -> None:
    """:func:`record_verified` for the file of one resource; :class:`JobError` when the
    resource was deleted meanwhile."""
    if record_verified(store, package_id, {resource_id: {"resource": result}}):
        raise JobError(f"Resource {resource_id} does not exist or was deleted")
