"""Where the files of a resource live and who may read them: the one place for these facts.

- which bucket and key hold an artifact of a resource (:func:`object_location`);
- whether its objects may be read anonymously (:func:`visible_to_all`,
  :func:`is_public`), and bringing their tags in line with that
  (:func:`align_visibility`);
- where CKAN keeps its local file (:func:`ckan_path`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ckan.model as model
import ckan.plugins.toolkit as tk

from .records import S3_UPLOAD_ERROR_FIELD, S3_URL_TYPE, JobError
from .storage.s3 import ARTIFACTS, ObjectStore, object_key
from .uploader import DepotResourceUpload


class ObjectLocation(NamedTuple):
    """The bucket and key of one object."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def object_location(
    store: ObjectStore, owner_org: str, resource_id: str, artifact: str = "resource"
) -> ObjectLocation:
    """Which bucket and key hold an artifact of a resource of a dataset in circle ``owner_org``."""
    return ObjectLocation(store.circle_bucket(owner_org), object_key(artifact, resource_id))


def visible_to_all(private: bool, state: str) -> bool:
    """The one rule of visibility: objects of public, active datasets are public."""
    return not private and state == "active"


def is_public(package: Mapping[str, Any], resource: Mapping[str, Any]) -> bool:
    """Whether a resource's objects are to be anonymously readable."""
    return (
        visible_to_all(package["private"], package["state"])
        and resource["state"] == "active"
        and not awaits_verification(resource)
    )


def row_is_public(package: model.Package, resource: model.Resource) -> bool:
    """:func:`is_public` for database rows."""
    return is_public(
        {"private": package.private, "state": package.state},
        {"state": resource.state, "url_type": resource.url_type, **(resource.extras or {})},
    )


def awaits_verification(resource: Mapping[str, Any]) -> bool:
    """A file uploaded straight to S3 whose SHA-256 is not recorded yet, or that was refused.

    Nobody gets it (it stays private, downloads are refused) until then.
    """
    return resource.get("url_type") == S3_URL_TYPE and (
        not resource.get("s3_available") or bool(resource.get(S3_UPLOAD_ERROR_FIELD))
    )


def ckan_path(resource_id: str) -> Path:
    """Where CKAN keeps (or kept) an uploaded resource's file."""
    upload = DepotResourceUpload({})
    if upload.storage_path is None:
        raise JobError("ckan.storage_path is not set: CKAN stores no uploaded files here")
    try:
        return Path(upload.get_path(resource_id))
    except tk.ValidationError as exc:
        raise JobError(
            f"CKAN's path of resource {resource_id} is a symlink that leads outside the "
            "depots (ckanext.dcor_depot.depots_path); check it by hand"
        ) from exc


class Aligned(NamedTuple):
    name: str
    #: whether the dataset is public and active
    public: bool
    changed: int
    unchanged: int


def align_visibility(
    store: ObjectStore, package_id: str, resource_ids: Iterable[str] | None = None
) -> Aligned | None:
    """Bring the tags of a dataset's objects in line with the dataset as it is now.

    Reads the dataset and its resources from the database (not a dict a
    caller may hold from before a change): an object is tagged public only
    while :func:`is_public` says so; an object of a resource that no longer
    exists is made private. ``resource_ids``: only the objects of these
    resources (default: of every resource, deleted ones too). Objects that
    do not exist are skipped. None when the dataset is gone or has no circle.
    """
    model.Session.expire_all()
    package = model.Package.get(package_id)
    if package is None or not package.owner_org:
        return None
    resources = model.Session.query(model.Resource).filter_by(package_id=package.id)
    wanted = {r.id: row_is_public(package, r) for r in resources}
    if resource_ids is not None:
        wanted = {rid: wanted.get(rid, False) for rid in resource_ids}
    changed = unchanged = 0
    for resource_id, public in wanted.items():
        for artifact in ARTIFACTS:
            location = object_location(store, package.owner_org, resource_id, artifact)
            current = store.visibility(*location)
            if current is None:
                continue
            if current == public:
                unchanged += 1
            else:
                store.set_public(*location, public)
                changed += 1
    return Aligned(package.name, visible_to_all(package.private, package.state), changed, unchanged)
