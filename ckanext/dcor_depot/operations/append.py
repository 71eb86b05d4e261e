"""Adding a file to an existing dataset straight into S3 (``ckan append-resource``).

Everything that can be checked is checked before anything changes; the
resource is created only after its object is verified, and the source file
is deleted only after that, once the object's bytes have been read back.
"""

from __future__ import annotations

import dataclasses
import stat
import uuid
from pathlib import Path
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk

from .. import errors, placement, resource_fields
from ..dc_file import mimetype_for, read_dc_fields
from ..jobs.verified import record_verified_file
from ..logic import rules
from ..model import ckan_rows
from ..storage.depot import file_state
from ..storage.s3 import ObjectStore, sha256_of_file

#: Namespace of the resource ids made by :func:`resource_id_for`.
RESOURCE_ID_NAMESPACE = uuid.UUID("5d5ab1c6-8c4e-4f0d-9a43-7b0a3d7c1e20")


class AppendError(Exception):
    """The file cannot be appended; nothing was changed. The message says why."""


@dataclasses.dataclass(frozen=True)
class Appended:
    resource: dict[str, Any]
    uploaded: bool
    source_deleted: bool


def resource_id_for(package_id: str, sha256: str, generation: int = 0) -> str:
    """The reproducible id of the resource holding a file with ``sha256`` in a dataset.

    ``generation`` counts earlier resources of that id that were deleted.
    """
    name = f"{package_id}/{sha256}" + (f"/{generation}" if generation else "")
    return str(uuid.uuid5(RESOURCE_ID_NAMESPACE, name))


def check_source(path: Path) -> None:
    """Refuse a path that is not a readable regular file."""
    try:
        _check_source(path)
    except OSError as exc:  # e.g. a folder on the way that cannot be searched
        raise AppendError(f"{path} cannot be read: {exc.strerror}") from exc


def _check_source(path: Path) -> None:
    if not path.exists():
        raise AppendError(f"{path} does not exist")
    if path.is_dir():
        raise AppendError(f"{path} is a directory: append the files in it one by one")
    if not stat.S_ISREG(path.stat().st_mode):
        raise AppendError(f"{path} is not a regular file")
    with open(path, "rb") as fd:  # an OSError here: check_source says it cannot be read
        fd.read(1)


def append_resource(
    store: ObjectStore,
    path: Path,
    dataset: str,
    name: str | None = None,
    dc_check: bool = True,
    delete_source: bool = False,
) -> Appended:
    path = Path(path).absolute()
    check_source(path)
    name = name or path.name
    try:
        package = ckan_rows.show_package(dataset)
    except tk.ObjectNotFound as exc:
        raise AppendError(f"There is no dataset {dataset!r}: check its name or id") from exc
    if package["state"] == "deleted":
        raise AppendError(f"Dataset {package['name']} is deleted: restore it first")
    try:
        placement.require_circle(package["name"], package.get("owner_org"))
    except errors.NoCircle as exc:
        raise AppendError(str(exc)) from None
    fields: dict[str, Any] = {}
    if resource_fields.is_dc_file({"name": name, "url": path.name}):
        fields, problem = read_dc_fields(path)
        if problem and dc_check:
            raise AppendError(
                f"{path} is not a valid DC file ({problem}); fix it, or pass --no-dc-check "
                "to append it anyway"
            )
    before = file_state(path)
    sha256 = sha256_of_file(path)
    for resource in package["resources"]:
        if resource.get("sha256") == sha256:
            raise AppendError(
                f"{path} is already in dataset {package['name']} as resource "
                f"{resource['id']} ({resource.get('name')})"
            )
    resource_id = _free_resource_id(package["id"], sha256)

    location = placement.object_location(store, package["owner_org"], resource_id)
    # private until recorded: an object nobody records is never public
    served = {"id": resource_id, "url_type": resource_fields.S3_URL_TYPE, "name": name}
    headers = resource_fields.object_headers({**served, "mimetype": mimetype_for(name)})
    result = store.upload_verified(path, *location, sha256=sha256, headers=headers)
    try:
        resource = ckan_rows.write_action(
            "resource_create",
            {
                "id": resource_id,
                "package_id": package["id"],
                "name": name,
                "url": placement.s3_url(store, location),
                "url_type": resource_fields.S3_URL_TYPE,
                "mimetype": mimetype_for(name),
                **fields,
                **placement.s3_fields(store, "resource", result),
            },
        )
    except tk.ValidationError as exc:
        raise AppendError(
            f"The file was uploaded to {location}, but CKAN refused the resource: "
            f"{exc.error_summary}; fix that and run the command again (the upload is reused)"
        ) from exc
    # public now if the dataset is (it may have changed during a long upload)
    record_verified_file(store, package["id"], resource_id, result)
    deleted = False
    if delete_source:
        problem = store.fixity_problem(*location, sha256, before[1], rehash=True)
        if problem is None and file_state(path) != before:
            problem = "the file changed during the upload"
        if problem is not None:
            raise AppendError(f"Resource {resource_id} was created, but {path} was kept: {problem}")
        path.unlink()
        deleted = True
    return Appended(resource, not result.skipped, deleted)


def _free_resource_id(package_id: str, sha256: str) -> str:
    """The first id of :func:`resource_id_for` that no resource of the dataset (deleted
    ones too) has; an id taken elsewhere is an error (``rules.id_clash``), never skipped."""
    generation = 0
    while True:
        resource_id = resource_id_for(package_id, sha256, generation)
        if clash := rules.id_clash(resource_id, package_id):
            raise AppendError(f"The file cannot be appended: {clash}")
        existing = model.Resource.get(resource_id)
        if existing is None:
            return resource_id
        if existing.state != "deleted":
            raise AppendError(f"Resource {resource_id} already holds this file")
        generation += 1
