"""Where the files of a resource live and who may read them: the one place for these facts.

Whether an object may be read anonymously (:func:`visible_to_all`,
:func:`is_public`) and where CKAN keeps a resource's local file
(:func:`ckan_path`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk

from .records import S3_UPLOAD_ERROR_FIELD, S3_URL_TYPE, JobError
from .uploader import DepotResourceUpload


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
