"""What CKAN records about the depot's files, read and written the same way by jobs,
commands and hooks: the site user's context, fresh dicts of datasets and resources, the
fields the jobs record, and resource patches that neither race nor fire the
depot's hooks again."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa

from .storage.s3 import ObjectStore, UploadResult

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: Context key set by the depot's jobs: the plugin's hooks ignore such updates.
JOB_CONTEXT_KEY = "dcor_depot_job"
#: The ``url_type`` of a resource whose file went straight to S3 (never to CKAN's storage).
S3_URL_TYPE = "s3_upload"
#: Resource field saying why the file uploaded straight to S3 was refused.
S3_UPLOAD_ERROR_FIELD = "s3_upload_error"
#: Resource fields only the depot's jobs write; a user's create or update cannot set them.
JOB_FIELDS = ("s3_available", "s3_url", "etag", S3_UPLOAD_ERROR_FIELD)


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


def show_package(package_id: str, fresh: bool = False) -> dict[str, Any]:
    """The dataset as CKAN shows it; ``fresh``: from the database, not the search index."""
    context = job_context()
    if fresh:
        context["use_cache"] = False
    return tk.get_action("package_show")(context, {"id": package_id})


def is_dc_file(resource: Mapping[str, Any]) -> bool:
    names = (resource.get("url") or "", resource.get("name") or "")
    return any(name.lower().endswith(".rtdc") for name in names)


def patch_resource(resource_id: str, fields: Mapping[str, Any]) -> bool:
    """Set ``fields`` on a resource unless they already hold these values.

    Returns True when something changed; see :func:`patch_resources`.
    """
    package_id = model.Session.execute(
        sa.text("SELECT package_id FROM resource WHERE id = :id"), {"id": resource_id}
    ).scalar()
    model.Session.rollback()
    if package_id is None:
        raise JobError(f"Resource {resource_id} does not exist")
    changed, gone = patch_resources(package_id, {resource_id: fields})
    if gone:
        raise JobError(f"Resource {resource_id} does not exist or was deleted")
    return bool(changed)


def patch_resources(
    package_id: str, fields: Mapping[str, Mapping[str, Any]]
) -> tuple[set[str], set[str]]:
    """Set fields on resources of one dataset (``{resource id: fields}``) in one update.

    Patches of one dataset are serialized with a PostgreSQL advisory lock
    held until CKAN commits, and they re-read the dataset under it: two
    jobs patching the same dataset never undo each other's fields. Fields
    that already hold their values are left alone. Returns the ids of the
    resources that changed and of those that are no longer active.
    """
    session = model.Session
    try:
        session.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(package_id)}
        )
        session.expire_all()
        package = show_package(package_id, fresh=True)
        changed = set()
        for resource in package["resources"]:
            changes = {
                k: v for k, v in fields.get(resource["id"], {}).items() if resource.get(k) != v
            }
            if changes:
                resource.update(changes)
                changed.add(resource["id"])
        if changed:
            # what resource_patch does, for several resources at once
            tk.get_action("package_update")(job_context(), package)
        return changed, set(fields) - {r["id"] for r in package["resources"]}
    finally:
        # ends the transaction (package_update has committed) and frees the lock
        session.rollback()


def claimed_sha256(resource: Mapping[str, Any]) -> str | None:
    """The SHA-256 a resource states for its file (given by the client, or recorded before),
    when it is a well-formed one: an upload of the file must match it."""
    claimed = str(resource.get("sha256") or "").lower()
    return claimed if _SHA256_RE.match(claimed) else None


def s3_fields(store: ObjectStore, artifact: str, result: UploadResult) -> dict[str, Any]:
    """The resource fields that record the verified object of an artifact."""
    if artifact == "resource":
        return {
            "sha256": result.sha256,
            "size": result.size,
            "etag": result.etag,
            "s3_available": True,
            "s3_url": store.object_url(result.bucket, result.key),
        }
    return {f"s3_{artifact}_sha256": result.sha256, f"s3_{artifact}_size": result.size}


def recorded_object(resource: Mapping[str, Any], artifact: str) -> tuple[str, int] | None:
    """``(sha256, size)`` of the verified object a resource's fields record for an artifact."""
    if artifact == "resource":
        sha256, size = resource.get("sha256"), resource.get("size")
        if not resource.get("s3_available"):
            return None
    else:
        sha256, size = resource.get(f"s3_{artifact}_sha256"), resource.get(f"s3_{artifact}_size")
    if not sha256 or size in (None, ""):
        return None
    return str(sha256), int(size)


def _lock_key(package_id: str) -> int:
    digest = hashlib.sha256(f"dcor_depot:{package_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
