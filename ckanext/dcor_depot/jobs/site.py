"""What every job needs from CKAN: the site user's context, fresh dicts,
CKAN's path of a resource file, and resource patches that neither race nor
fire the depot's hooks again."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa

from ..uploader import DepotResourceUpload

#: Context key set by the depot's jobs: the plugin's hooks ignore such updates.
JOB_CONTEXT_KEY = "dcor_depot_job"


class JobError(Exception):
    """A job cannot do its work; the message says why and what to do."""


def job_context() -> dict[str, Any]:
    site_user = tk.get_action("get_site_user")({"ignore_auth": True}, {})
    return {"ignore_auth": True, "user": site_user["name"], JOB_CONTEXT_KEY: True}


def show_resource(resource_id: str) -> dict[str, Any]:
    try:
        return tk.get_action("resource_show")(job_context(), {"id": resource_id})
    except tk.ObjectNotFound as exc:
        raise JobError(f"Resource {resource_id} does not exist or was deleted") from exc


def show_package(package_id: str) -> dict[str, Any]:
    return tk.get_action("package_show")(job_context(), {"id": package_id})


def visible_to_all(private: bool, state: str) -> bool:
    """The one rule of visibility: objects of public, active datasets are public."""
    return not private and state == "active"


def is_public(package: Mapping[str, Any], resource: Mapping[str, Any]) -> bool:
    """Whether a resource's objects are to be anonymously readable."""
    return visible_to_all(package["private"], package["state"]) and resource["state"] == "active"


def ckan_path(resource_id: str) -> Path:
    """Where CKAN keeps (or kept) an uploaded resource's file."""
    upload = DepotResourceUpload({})
    if upload.storage_path is None:
        raise JobError("ckan.storage_path is not set: CKAN stores no uploaded files here")
    return Path(upload.get_path(resource_id))


def is_dc_file(resource: Mapping[str, Any]) -> bool:
    names = (resource.get("url") or "", resource.get("name") or "")
    return any(name.lower().endswith(".rtdc") for name in names)


def patch_resource(resource_id: str, fields: Mapping[str, Any]) -> bool:
    """Set ``fields`` on a resource unless they already hold these values.

    Patches of one dataset are serialized with a PostgreSQL advisory lock
    held until CKAN commits, and they re-read the resource under it: two
    jobs patching the same dataset never undo each other's fields. Returns
    True when something changed.
    """
    session = model.Session
    try:
        package_id = session.execute(
            sa.text("SELECT package_id FROM resource WHERE id = :id"), {"id": resource_id}
        ).scalar()
        if package_id is None:
            raise JobError(f"Resource {resource_id} does not exist")
        session.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(package_id)}
        )
        session.expire_all()
        current = show_resource(resource_id)
        changes = {k: v for k, v in fields.items() if current.get(k) != v}
        if changes:
            tk.get_action("resource_patch")(job_context(), {"id": resource_id, **changes})
        return bool(changes)
    finally:
        # ends the transaction (resource_patch has committed) and frees the lock
        session.rollback()


def _lock_key(package_id: str) -> int:
    digest = hashlib.sha256(f"dcor_depot:{package_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
