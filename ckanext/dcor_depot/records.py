"""What is recorded about the depot's files, read and written the same way by jobs,
commands and hooks: in CKAN, the site user's context, fresh dicts of datasets and
resources, the fields the jobs record, and resource patches that neither race nor
fire the depot's hooks again; in the extension's own table (``model.py``), each
file's dataset and the location and checksum of its verified object."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import logging
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa
from ckan.lib.dictization import model_dictize
from sqlalchemy.dialects.postgresql import insert

from .dc_file import DC_ERROR_FIELD
from .model import file_table
from .storage.s3 import (
    MD5_METADATA_KEY,
    ObjectStore,
    S3Error,
    UploadResult,
    content_disposition,
)

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: Context key set by the depot's jobs: the plugin's hooks ignore such updates.
JOB_CONTEXT_KEY = "dcor_depot_job"
#: The ``url_type`` of a resource whose file went straight to S3 (never to CKAN's storage).
S3_URL_TYPE = "s3_upload"
#: Resource field saying why the file uploaded straight to S3 was refused.
S3_UPLOAD_ERROR_FIELD = "s3_upload_error"
#: Resource fields only the depot's jobs write; a user's create or update cannot set them.
JOB_FIELDS = ("s3_available", "s3_url", "etag", S3_UPLOAD_ERROR_FIELD)
#: Object metadata of an upload's object: the dataset it is for, and its size.
DATASET_METADATA = "dcor-dataset-id"
SIZE_METADATA = "dcor-size"
#: Object metadata: the SHA-256 the client declared when it registered the upload,
#: until the s3-sha256 job has compared it with the bytes.
DECLARED_SHA256_METADATA = "dcor-declared-sha256"
#: The metadata an object uploaded with a grant keeps (the checksum job drops any other).
ISSUED_METADATA = (DATASET_METADATA, SIZE_METADATA, MD5_METADATA_KEY)
_ARTIFACT_FIELD_RE = re.compile(r"^s3_[a-z]+_(sha256|size)$")

#: True while the extension itself writes through a CKAN action (:func:`write_action`).
WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("dcor_depot_writing", default=False)


def is_recorded_field(name: str) -> bool:
    """Whether a resource field is one only the extension writes (``guard.py``);
    ``sha256`` and ``size`` also are, once the resource holds a file."""
    return (
        name in JOB_FIELDS
        or name == DC_ERROR_FIELD
        or name.startswith("dc:")
        or bool(_ARTIFACT_FIELD_RE.match(name))
    )


def write_action(action: str, data: dict[str, Any]) -> dict[str, Any]:
    """Call a CKAN action as the extension: the site user, the plugin's hooks
    skip it, and the guard (``guard.py``) lets the recorded fields through."""
    token = WRITING.set(True)
    try:
        return tk.get_action(action)(job_context(), data)
    finally:
        WRITING.reset(token)


class JobError(Exception):
    """A job cannot do its work; the message says why and what to do."""


def failure_text(exc: Exception) -> str:
    """What to say of one item that failed: the message of a JobError or S3Error (they
    say what to do), or the type and message of anything else, whose traceback goes to
    the log."""
    if isinstance(exc, (JobError, S3Error)):
        return str(exc)
    log.exception("dcor_depot: one item failed, the others go on")
    return f"{type(exc).__name__}: {exc}"


def one_item_failed(exc: Exception) -> str:
    """:func:`failure_text`, for a site-wide command that goes on with the next item: the
    session is rolled back, so that the next item starts clean."""
    model.Session.rollback()
    return failure_text(exc)


def job_context() -> dict[str, Any]:
    site_user = tk.get_action("get_site_user")({"ignore_auth": True}, {})
    return {"ignore_auth": True, "user": site_user["name"], JOB_CONTEXT_KEY: True}


def show_resource(resource_id: str) -> dict[str, Any]:
    """The resource's dict as ``resource_show`` gives it, from its row alone: a
    job's read costs the same in a dataset of 1 or of 300 resources
    (``resource_show`` dictizes the whole dataset)."""
    resource = model.Resource.get(resource_id)
    if resource is None or resource.state != "active":
        raise JobError(f"Resource {resource_id} does not exist or was deleted")
    return model_dictize.resource_dictize(resource, {"model": model, "session": model.Session})


@dataclasses.dataclass(frozen=True)
class DatasetNames:
    """What a job names a dataset and its depot folder by."""

    id: str
    name: str
    #: the name of the user who created it, and of its organization (circle)
    creator: str | None
    organization: str | None


def dataset_names(package_id: str) -> DatasetNames:
    """The dataset's names, from its row and its owners' (constant cost)."""
    package = model.Package.get(package_id)
    if package is None:
        raise JobError(f"Dataset {package_id} does not exist")
    creator = model.User.get(package.creator_user_id) if package.creator_user_id else None
    organization = model.Group.get(package.owner_org) if package.owner_org else None
    return DatasetNames(
        package.id,
        package.name,
        creator.name if creator else None,
        organization.name if organization else None,
    )


def show_package(package_id: str, fresh: bool = False) -> dict[str, Any]:
    """The dataset as CKAN shows it; ``fresh``: from the database, not the search index."""
    context = job_context()
    if fresh:
        context["use_cache"] = False
    return tk.get_action("package_show")(context, {"id": package_id})


def is_dc_file(resource: Mapping[str, Any]) -> bool:
    names = (resource.get("url") or "", resource.get("name") or "")
    return any(name.lower().endswith(".rtdc") for name in names)


def download_name(resource: Mapping[str, Any]) -> str:
    """The file name a download gets: the uploaded file's, else the resource's name."""
    if resource.get("url_type") == "upload":
        name = posixpath.basename(resource.get("url") or "")
    else:
        name = resource.get("name") or ""
    return name or resource["id"]


def object_headers(resource: Mapping[str, Any]) -> dict[str, str]:
    """How a resource's object is served: under the file's name, with its mimetype.

    Stored with the object, so that a plain (unsigned) URL of a public file
    names it too.
    """
    headers = {"ContentDisposition": content_disposition(download_name(resource))}
    if resource.get("mimetype"):
        headers["ContentType"] = resource["mimetype"]
    return headers


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
    """Set fields on resources of one dataset (``{resource id: fields}``), at a cost
    that does not grow with the dataset (``None`` removes a field).

    The resource rows are written directly, not through ``package_update``
    (which reads, validates and indexes the whole dataset): the dataset's row
    is locked (``SELECT ... FOR UPDATE``) and the resources read under the
    lock, so a user's write that began before (it updates the dataset's
    row) is committed and seen first, one that begins after waits, and the
    guard (``guard.py``) restores in it what was recorded here. The dataset's
    ``metadata_modified`` changes, so ``package_show`` reads the database
    until the search index has it again; :func:`jobs.index.request_index`
    queues one index update per dataset for any number of patches. Fields
    that already hold their values are left alone. Returns the ids of the
    resources that changed and of those that are no longer active.
    """
    session = model.Session
    try:
        lock_dataset(package_id)
        rows = {row.id: row for row in _resource_rows(package_id, fields)}
        now = datetime.datetime.utcnow()
        changed = set()
        for resource_id, row in rows.items():
            core, extras = _changes(row, fields[resource_id])
            if core or extras != (row.extras or {}):
                session.execute(
                    sa.update(model.resource_table)
                    .where(model.resource_table.c.id == resource_id)
                    .values(**core, extras=extras, metadata_modified=now)
                )
                changed.add(resource_id)
        if changed:
            session.execute(
                sa.update(model.package_table)
                .where(model.package_table.c.id == package_id)
                .values(metadata_modified=now)
            )
        session.commit()
        if changed:
            from .jobs import index  # the jobs build on records

            index.request_index(package_id)
        return changed, set(fields) - set(rows)
    finally:
        session.rollback()  # frees the lock when nothing was written


def _resource_rows(package_id: str, fields: Mapping[str, Any]) -> list:
    """The active resources of a dataset among ``fields``' keys, as the database has them."""
    table = model.resource_table
    return model.Session.execute(
        sa.select(table.c.id, table.c.extras, *[table.c[name] for name in _CORE_FIELDS]).where(
            table.c.package_id == package_id,
            table.c.state == "active",
            table.c.id.in_(list(fields)),
        )
    ).all()


#: The resource fields the jobs write that are columns of CKAN's table (not extras).
_CORE_FIELDS = ("size", "format", "mimetype")


def _changes(row, wanted: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    core = {k: v for k, v in wanted.items() if k in _CORE_FIELDS and getattr(row, k) != v}
    extras = dict(row.extras or {})
    for key, value in wanted.items():
        if key in _CORE_FIELDS:
            continue
        if value is None:
            extras.pop(key, None)
        else:
            extras[key] = value
    return core, extras


def patch_dataset(package_id: str, **fields: Any) -> dict[str, Any]:
    """``package_patch`` by the extension, reading the dataset under its lock
    (see :func:`patch_resources`)."""
    try:
        lock_dataset(package_id)
        model.Session.expire_all()
        return write_action("package_patch", {"id": package_id, **fields})
    finally:
        model.Session.rollback()


def claimed_sha256(resource: Mapping[str, Any]) -> str | None:
    """The SHA-256 a resource states for its file (recorded before: users cannot set it,
    ``guard.py``), when it is a well-formed one: an upload of the file must match it."""
    return well_formed_sha256(resource.get("sha256"))


def well_formed_sha256(value: Any) -> str | None:
    """``value`` as a SHA-256 in lower-case hex, or None when it is not one."""
    claimed = str(value or "").lower()
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


def lock_dataset(package_id: str) -> None:
    """Lock the dataset's row until the session's transaction ends."""
    model.Session.execute(
        sa.text(
            "SELECT 1 FROM package WHERE id = COALESCE("
            "(SELECT id FROM package WHERE id = :id), (SELECT id FROM package WHERE name = :id)"
            ") FOR UPDATE"  # the id first: names are free to choose
        ),
        {"id": package_id},
    )


# the extension's own record of files (model.file_table)


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """A row of the extension's table: one artifact of a resource."""

    resource_id: str
    artifact: str
    package_id: str
    bucket: str | None
    key: str | None
    sha256: str | None
    size: int | None
    etag: str | None
    recorded: datetime.datetime
    moved_from: str | None
    purged: datetime.datetime | None
    owner_org: str | None = None


@contextlib.contextmanager
def plugin_tables() -> Iterator[None]:
    """Say what to run when a table of the plugin is missing, instead of a database traceback."""
    try:
        yield
    except sa.exc.ProgrammingError as exc:
        model.Session.rollback()
        if table := re.search(r"\b(dcor_depot_[a-z]+)\b", str(exc)):
            raise JobError(
                f"The table {table.group(1)} is missing: run `ckan -c CKAN_INI db upgrade -p "
                "dcor_depot` (the plugin's migrations)"
            ) from exc
        raise


def file_records(
    package_ids: Iterable[str] | None = None,
    resource_ids: Iterable[str] | None = None,
    purged_before: datetime.datetime | None = None,
) -> list[FileRecord]:
    """Rows of the table, of some datasets, resources, or purged before a moment (or all)."""
    query = sa.select(file_table)
    if package_ids is not None:
        query = query.where(file_table.c.package_id.in_(list(package_ids)))
    if resource_ids is not None:
        query = query.where(file_table.c.resource_id.in_(list(resource_ids)))
    if purged_before is not None:
        query = query.where(file_table.c.purged < purged_before)
    with plugin_tables():
        rows = model.Session.execute(query).all()
        model.Session.rollback()
    return [FileRecord(**row._mapping) for row in rows]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _write(statement, commit: bool) -> None:
    with plugin_tables():
        model.Session.execute(statement)
        if commit:
            model.Session.commit()


def record_object(
    package_id: str,
    resource_id: str,
    artifact: str,
    result: UploadResult,
    moved_from: str | None = None,
    commit: bool = True,
) -> None:
    """Record the verified object of an artifact (``moved_from``: an old copy still to delete)."""
    values = {
        "package_id": package_id,
        "bucket": result.bucket,
        "key": result.key,
        "sha256": result.sha256,
        "size": result.size,
        "etag": result.etag,
        "recorded": _now(),
        "moved_from": moved_from,
    }
    statement = insert(file_table).values(resource_id=resource_id, artifact=artifact, **values)
    _write(
        statement.on_conflict_do_update(index_elements=["resource_id", "artifact"], set_=values),
        commit,
    )


def record_file(
    package_id: str,
    resource_id: str,
    commit: bool = True,
    size: int | None = None,
    owner_org: str | None = None,
) -> None:
    """Record that the extension keeps the file of a resource (before it has an object);
    ``size``: its bytes, which count against the quota of the circle ``owner_org`` until
    the file is pruned (a row recorded before keeps its size; gets the circle)."""
    statement = insert(file_table).values(
        resource_id=resource_id,
        artifact="resource",
        package_id=package_id,
        recorded=_now(),
        size=size,
        owner_org=owner_org,
    )
    if owner_org is None:
        statement = statement.on_conflict_do_nothing(index_elements=["resource_id", "artifact"])
    else:
        statement = statement.on_conflict_do_update(
            index_elements=["resource_id", "artifact"], set_={"owner_org": owner_org}
        )
    _write(statement, commit)


def clear_moved_from(resource_id: str, artifact: str, bucket: str) -> None:
    """The old copy in ``bucket`` of a moved object is gone."""
    _write(
        sa.update(file_table)
        .where(
            file_table.c.resource_id == resource_id,
            file_table.c.artifact == artifact,
            file_table.c.moved_from == bucket,
        )
        .values(moved_from=None),
        commit=True,
    )


def mark_purged(resource_ids: Iterable[str], commit: bool = True) -> None:
    """CKAN lost these resources now: their copies go after the retention period."""
    ids = list(resource_ids)
    if ids:
        _write(
            sa.update(file_table)
            .where(file_table.c.resource_id.in_(ids), file_table.c.purged.is_(None))
            .values(purged=_now()),
            commit,
        )


def forget_file(resource_id: str) -> None:
    """Remove the rows of a resource whose copies were all removed."""
    _write(sa.delete(file_table).where(file_table.c.resource_id == resource_id), commit=True)
