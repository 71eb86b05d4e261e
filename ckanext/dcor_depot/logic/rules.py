"""Only the extension writes what its jobs record, and a stored file never changes.

Every CKAN action that writes resources (resource_create/update/patch/delete,
package_create/update/patch/revise, the web forms) ends in
``package_create`` or ``package_update``, which call the plugin's
``IPackageController.create``/``edit`` with the dataset before CKAN commits.
:func:`keep_records` runs there, on every path, and compares each resource
with its committed row:

- the fields the jobs record (:func:`resource_fields.is_recorded_field`, plus
  ``sha256`` and ``size`` of a resource with a file) keep their committed
  values; a new resource gets none of them (a ``sha256`` given when an upload
  is registered is kept with its object, as a declaration the s3-sha256 job
  checks, never on the resource);
- a resource that holds a file keeps its ``url`` and ``url_type``: a change
  is refused with a message that says to add a new resource;
- a new resource's id (and a new dataset's) is the canonical form of a UUID, and no
  file was stored under it before (CKAN's path, the extension's table);
- ``url_type`` ``s3_upload`` is set only on a new resource whose id has a
  pending upload grant of this dataset, with the object it issued
  (:func:`register`: one HEAD of the staged object, which it copies into the circle
  bucket, and uses the grant up); the id of
  a pending grant is not taken by any other new resource.

The extension's own writes (:func:`ckan_rows.write_action`) pass unchanged.
CKAN's uploader (``uploader.py``) asks :func:`refuse_upload` before it touches the
disk: it does not write or clear the file of a resource that holds one, and a new
file fits into its circle's quota. Which resource ids may be used
(:func:`refuse_chosen_id`, :func:`refuse_used_id`,
:func:`refuse_resources_of_other_datasets`, and :func:`id_clash` for the ids the
extension derives itself) is decided here too.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa
from ckan.lib.munge import munge_filename

from .. import config, placement, resource_fields
from ..dc_file import mimetype_for
from ..errors import JobError
from ..jobs import resource_jobs
from ..model import ckan_rows, depot_files, grants
from ..resource_fields import DATASET_METADATA, DECLARED_SHA256_METADATA, SIZE_METADATA
from ..storage.s3 import (
    MD5_METADATA_KEY,
    ObjectStore,
    S3Error,
    StagedObjectChanged,
    StagedObjectUnreadable,
)
from . import upload_route

REPLACE_REFUSED = (
    "Resource {id} holds a file ({name}); its file, url and url_type stay as first "
    "published (the depot copy and the S3 object keep these bytes). To publish other "
    "bytes, add a new resource"
)


def keep_records(package: model.Package, created: bool = False) -> None:
    """Bring the resources of ``package`` (not yet committed; ``created``: a new dataset) in
    line with the rules above. Only the resources this transaction adds or changes are
    compared (:func:`_changed_resources`): the others are not written, and an upload
    into a dataset of hundreds of files costs what it costs in a dataset of one."""
    if created and not ckan_rows.WRITING.get():
        refuse_other_id_forms("Dataset", package.id, "id")
    resources = _changed_resources(package)
    if not resources:
        return
    ids = [resource.id for resource in resources]
    if ckan_rows.WRITING.get():  # the extension's own write: it holds the dataset's lock
        refuse_resources_of_other_datasets(package.id, ckan_rows.committed_resources(ids))
        return
    committed = _committed(package.id, ids)
    refuse_resources_of_other_datasets(package.id, committed)
    try:
        for resource in resources:
            before = committed[resource.id]
            if not _known(before):
                _new_resource(package, resource, before)
            elif not before["row"]:  # CKAN dropped the row; the file stays until pruned
                raise _used_before(resource.id)
            else:
                _existing_resource(resource, before)
        # CKAN dictizes the dataset for the search index with plain SQL, which
        # does not flush: the restored values must be in the database first
        model.Session.flush()
    except tk.ValidationError:
        model.Session.rollback()  # nothing of the refused write stays in the session
        raise


def _known(before: dict[str, Any]) -> bool:
    """Something is committed under the id: a resource's row, or a file recorded of it."""
    return before["row"] or bool(before["recorded_for"])


def refuse_resources_of_other_datasets(package_id: str, committed: dict[str, dict]) -> None:
    """A resource id never moves to another dataset, not even one of a deleted or purged one.

    CKAN lets a dataset update reuse the id of a deleted resource and moves
    that row over; its objects would then be served as the new dataset's.
    """
    for resource_id, before in committed.items():
        others = {before["package_id"]} if before["row"] else set()
        if (others | set(before["recorded_for"])) - {package_id}:
            raise tk.ValidationError(
                {
                    "resources": [
                        f"Resource id {resource_id} belongs to another dataset: choose a new id"
                    ]
                }
            )


# what this transaction changed, and what was committed before it (both live as long
# as CKAN's transaction)
_CHANGED = "dcor_depot_changed_resources"
_INSERTED = "dcor_depot_inserted_resources"
_OWNERS = "dcor_depot_circles_before"
_COMMITTED = "dcor_depot_committed_resources"
_LOCKED = "dcor_depot_locked_datasets"


def _note_changes(session, flush_context, instances) -> None:
    """Before each flush: the resources the flush adds or changes (SQLAlchemy forgets which
    once they are written, and CKAN flushes before it calls the plugin's hooks)."""
    noted = session.info.setdefault(_CHANGED, [])
    inserted = session.info.setdefault(_INSERTED, [])
    owners = session.info.setdefault(_OWNERS, {})
    for obj in session.new:
        if isinstance(obj, model.Resource):
            noted.append(obj)
            inserted.append(obj)
    for obj in session.dirty:
        if isinstance(obj, model.Resource) and session.is_modified(obj):
            noted.append(obj)
        elif isinstance(obj, model.Package) and obj.id not in owners:
            # (a marker of SQLAlchemy's when the row was not loaded: never a circle's id)
            owners[obj.id] = sa.inspect(obj).committed_state.get("owner_org", obj.owner_org)


def owner_org_before(package: model.Package) -> object:
    """The dataset's circle as this transaction found it (before it changed it, flushed or
    not), or a marker that is no circle's id when that is not known."""
    found = model.Session().info.get(_OWNERS, {})
    if package.id in found:
        return found[package.id]
    return sa.inspect(package).committed_state.get("owner_org", package.owner_org)


def _changed_resources(package: model.Package) -> list[model.Resource]:
    """The resources of ``package`` this transaction added or changed (flushed or not)."""
    session = model.Session()
    noted = {id(obj) for obj in session.info.get(_CHANGED, ())}
    noted.update(id(obj) for obj in session.new)
    noted.update(id(obj) for obj in session.dirty if session.is_modified(obj))
    return [resource for resource in package.resources_all if resource.id and id(resource) in noted]


def _committed(package_id: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`ckan_rows.committed_resources` of ids of a dataset, read once its row is locked
    (once per transaction): a job that read the dataset before has committed, one that reads
    later waits. Each id is read once per transaction, before the transaction records
    anything under it; until it ends, no job writes them.

    Ids whose resource rows this transaction inserted (a new resource, flushed: no
    committed row can have its id) are read in CKAN's own transaction, with the lock in
    the same statement; the others on a connection of their own (this transaction's
    changes of their rows are not what was committed)."""
    session = model.Session()
    info = session.info
    locked = info.setdefault(_LOCKED, set())
    cache = info.setdefault(_COMMITTED, {})
    missing = [rid for rid in resource_ids if rid not in cache]
    inserted = {obj.id for obj in info.get(_INSERTED, ()) if obj.id and sa.inspect(obj).persistent}
    if missing and set(missing) <= inserted:
        cache.update(ckan_rows.new_resource_ids(package_id, missing, lock=package_id not in locked))
        locked.add(package_id)
    if package_id not in locked:
        ckan_rows.lock_dataset(package_id)
        locked.add(package_id)
    missing = [rid for rid in resource_ids if rid not in cache]
    if missing:
        cache.update(ckan_rows.committed_resources(missing))
    return {rid: cache[rid] for rid in resource_ids}


def _forget_transaction(session, savepoint: bool = False) -> None:
    """At the end of CKAN's transaction, forget what it changed and read. At the end of a
    savepoint rolled back, only the reads and locks (PostgreSQL released the locks taken
    in it): the changes noted before it stay noted (more than changed is compared, never
    less), and an inserted row counts only while it is still in the session."""
    everything = (_CHANGED, _INSERTED, _OWNERS, _COMMITTED, _LOCKED)
    for name in (_COMMITTED, _LOCKED) if savepoint else everything:
        session.info.pop(name, None)


def refuse_replacing(current: dict[str, Any], resource: dict[str, Any]) -> None:
    """Before ``resource_update``: refuse a new file or ``clear_upload`` on a resource
    that holds a file, before any uploader (CKAN's own, or a file storage of CKAN
    2.12) touches it."""
    if not (resource.get("clear_upload") or _is_file(resource.get("upload"))):
        return
    before = ckan_rows.committed_resources([current["id"]])[current["id"]]
    if before["has_file"]:
        name = posixpath.basename(before["url"] or "") or current["id"]
        raise tk.ValidationError({"upload": [REPLACE_REFUSED.format(id=current["id"], name=name)]})


def _is_file(upload: Any) -> bool:
    return hasattr(upload, "filename") and hasattr(upload, "stream")


def refuse_other_id_forms(what: str, given: str, field: str) -> None:
    """Refuse an id in another form than the canonical one of a UUID (CKAN keeps any form
    ``uuid.UUID`` parses as given; the depot names files by the canonical form only, and
    two forms of one UUID would be two resources with one file)."""
    try:
        canonical = str(uuid.UUID(given))
    except (TypeError, ValueError):
        return  # not a UUID at all: CKAN's own validation says so
    if canonical != given:
        raise tk.ValidationError(
            {
                field: [
                    f"{what} id {given!r} is not in the canonical form of a UUID: use "
                    f"{canonical} (lower-case, with hyphens), or leave the id out"
                ]
            }
        )


def stored_before(resource_id: str) -> bool:
    """CKAN's path of the resource holds a file that this request did not upload."""
    try:
        path = placement.ckan_path(resource_id)
    except JobError:
        return False
    return (path.is_symlink() or path.exists()) and not uploaded_here(resource_id)


def id_clash(resource_id: str, package_id: str) -> str | None:
    """Why an id the extension derives for a new file of a dataset (append-resource, the
    figshare import) cannot be used, or None: a resource of another dataset has it (a
    user may choose any id), a file of another dataset was recorded under it, a pending
    upload reserved it, or CKAN's path holds a file under it."""
    others = [found for found in ckan_rows.datasets_holding_id(resource_id) if found != package_id]
    if others:
        return (
            f"resource id {resource_id} is taken by dataset {others[0]} (a resource, a "
            "file recorded under it, or a pending upload); nothing was stored. Check that "
            "dataset: the id is derived from this file, so somebody may have chosen it there"
        )
    if stored_before(resource_id) and model.Resource.get(resource_id) is None:
        return (
            f"a file is stored under resource id {resource_id} at CKAN's path, of no "
            "resource; nothing was stored. Remove it by hand after checking it"
        )
    return None


def refuse_used_id(resource_id: str) -> None:
    """Refuse a new resource's id under which a file was stored before at CKAN's path
    (CKAN never removes an uploaded file: one of a resource deleted before its jobs ran
    stays there, and its row may be gone): the jobs would give the new resource those
    bytes. (An id the extension recorded a file of counts as a resource holding a file,
    :func:`committed_resources`, in any dataset.)"""
    if stored_before(resource_id):
        raise _used_before(resource_id)


def _used_before(resource_id: str) -> tk.ValidationError:
    return tk.ValidationError(
        {
            "resources": [
                f"Resource id {resource_id} was used before on this site (a file is still "
                "stored under it): leave the id out, or choose a new one"
            ]
        }
    )


def refuse_chosen_id(resource_id: str) -> None:
    """Refuse a new resource's id that is not a random UUID (version 4) in canonical
    form. CKAN makes random ones; the extension derives version-5 ids for the files it
    adds itself (append-resource, the figshare import), which a user must not take first;
    any other string would name a file outside the depot's layout. Sysadmins may restore
    resources with their ids (``ckanapi load``)."""
    refuse_other_id_forms("Resource", resource_id, "resources")
    try:
        version = uuid.UUID(resource_id).version
    except (TypeError, ValueError):
        version = None
    user = _acting_user()
    if version != 4 and not (user is not None and user.sysadmin):  # a restore by sysadmins
        raise tk.ValidationError(
            {
                "resources": [
                    f"Resource id {resource_id!r} is not a random UUID (version 4): leave the "
                    "id out (CKAN makes one), or choose one made by uuid.uuid4()"
                ]
            }
        )


def _new_resource(package: model.Package, resource: model.Resource, before: dict[str, Any]) -> None:
    refuse_chosen_id(resource.id)
    refuse_used_id(resource.id)
    extras = dict(resource.extras or {})
    # a sha256 given here is no record: the registration of an upload takes it as a
    # declaration that the s3-sha256 job checks against the bytes
    declared = extras.get("sha256")
    kept = {
        k: v
        for k, v in extras.items()
        if not resource_fields.is_recorded_field(k) and k != "sha256"
    }
    if kept != extras:
        resource.extras = kept
    if resource.size is not None and resource.size < 0:
        resource.size = None
    grant = grants.get(resource.id, lock=True) if before["granted"] else None
    if grant is not None and grant.package_id is None and not resource.url_type:
        # an upload granted to a circle (DCOR-Aid's resource_upload_s3_urls), registered as
        # DCOR-Aid does: the issued id, a name, no url_type (its s3_available is dropped)
        resource.url_type = resource_fields.S3_URL_TYPE
    if resource.url_type == resource_fields.S3_URL_TYPE:
        sha256 = resource_fields.well_formed_sha256(declared)
        if declared not in (None, "") and sha256 is None:
            raise tk.ValidationError(
                {"sha256": [f"sha256 is {declared!r}: give the file's SHA-256 as 64 hex digits"]}
            )
        # raises when the grant or its object is not right; uses the grant up
        resource.size, resource.url = register(
            resource.id, package, resource.size, resource.name, sha256, _acting_user_id()
        )
        if not resource.mimetype:
            resource.mimetype = mimetype_for(resource.name or "")
        # its bytes count against the circle's quota from now on, whatever CKAN does
        depot_files.record_file(package.id, resource.id, False, resource.size, package.owner_org)
        resource_jobs.file_arrived(resource, registered=True)
    elif grant is not None:
        raise _reserved(resource.id)


def _reserved(resource_id: str) -> tk.ValidationError:
    return tk.ValidationError(
        {
            "id": [
                f"Resource id {resource_id} is reserved for a pending upload: register "
                f"it with url_type {resource_fields.S3_URL_TYPE}, or choose another id"
            ]
        }
    )


def refuse_new_file_id(resource_id: str, granted: bool) -> None:
    """Before CKAN's uploader writes the file of a resource id that has no row yet (CKAN
    writes it before the IPackageController hooks run): the rules of a new resource's
    id (:func:`refuse_chosen_id`, an id reserved for a pending upload), so that a
    refused id leaves no file behind."""
    refuse_chosen_id(resource_id)
    if granted:
        raise _reserved(resource_id)


def _acting_user() -> model.User | None:
    """The user whose request this is; None outside a request or anonymous."""
    try:
        user = tk.current_user
        return user if user and user.is_authenticated else None
    except (AttributeError, RuntimeError):
        return None


def _acting_user_id() -> str | None:
    user = _acting_user()
    return user.id if user is not None else None


def _existing_resource(resource: model.Resource, before: dict[str, Any]) -> None:
    if (
        resource.url_type == resource_fields.S3_URL_TYPE
        and before["url_type"] != resource_fields.S3_URL_TYPE
    ):
        raise tk.ValidationError(
            {
                "url_type": [
                    f"url_type {resource_fields.S3_URL_TYPE} is set only by registering an upload "
                    "of dcor_depot_upload_urls with resource_create (a new resource)"
                ]
            }
        )
    if before["has_file"] and before["state"] == "deleted" and resource.state != "deleted":
        raise tk.ValidationError(
            {
                "resources": [
                    f"Resource {resource.id} was deleted, and its file does not come back "
                    "with it (it may have been pruned, and the jobs are done with it): add a "
                    "new resource with the file"
                ]
            }
        )
    if before["has_file"]:
        if not _same_file(resource, before):
            name = posixpath.basename(before["url"] or "") or resource.name or resource.id
            raise tk.ValidationError({"url": [REPLACE_REFUSED.format(id=resource.id, name=name)]})
        # a form that shows the file as a link sends url_type "": unchanged
        resource.url_type, resource.url = before["url_type"], before["url"]
    extras = dict(resource.extras or {})
    old = before["extras"]
    keys = {k for k in set(extras) | set(old) if resource_fields.is_recorded_field(k)}
    if before["has_file"]:
        keys.add("sha256")
        if resource.size != before["size"]:
            resource.size = before["size"]
    kept = {k: v for k, v in extras.items() if k not in keys}
    kept.update({k: old[k] for k in keys if k in old})
    if kept != extras:
        resource.extras = kept


def _same_file(resource: model.Resource, before: dict[str, Any]) -> bool:
    """The resource still names the file it holds (``url_type`` left empty by a form,
    the file name as CKAN shows it, munged, or the full download URL)."""
    if resource.url_type not in (before["url_type"], "", None):
        return False
    new, old = resource.url or "", before["url"] or ""
    if new == old:
        return True
    if before["url_type"] == "upload":
        return munge_filename(posixpath.basename(new)) == munge_filename(posixpath.basename(old))
    return False


def refuse_upload(resource_id: str, path: str, size: int | None) -> None:
    """Before CKAN's uploader writes (``size``: a new file of that many bytes) or clears
    (``size`` None) the file at CKAN's ``path`` of a resource: refused for a resource that
    holds a file (a new file would overwrite the depot copy through the symlink, and
    clearing would delete the link to it), for an id a new resource may not have, and
    for a file that does not fit into its circle's quota. A new file is recorded
    (``depot_files.record_file``) in CKAN's transaction: its bytes count against the
    quota whatever CKAN does with the resource's row, until the file is pruned."""
    # the resource's row is in CKAN's session, not committed: CKAN 2.12 uploads before
    # its IPackageController.edit, 2.11's resource_create after
    resource = model.Session.get(model.Resource, resource_id)
    package = resource.package if resource is not None else None
    if package is not None:
        before = _committed(package.id, [resource_id])[resource_id]
    else:
        before = ckan_rows.committed_resources([resource_id])[resource_id]
    if os.path.lexists(path) or before["has_file"]:
        name = before["url"] or os.path.basename(path)
        raise tk.ValidationError({"upload": [REPLACE_REFUSED.format(id=resource_id, name=name)]})
    if size is None:
        return
    if not _known(before) and not ckan_rows.WRITING.get():
        refuse_new_file_id(resource_id, before["granted"])
    if package is None:
        return
    if package.owner_org and config.circle_quota() is not None:
        grants.lock_circle(package.owner_org)
        upload_route.check_quota(package, size, "upload", resource_id)
    depot_files.record_file(package.id, resource_id, False, size, package.owner_org)


def file_uploaded(resource_id: str, path: str) -> None:
    """CKAN's uploader wrote the file of a resource at ``path``: it is removed again if the
    transaction rolls back, and its jobs are queued once it commits (the extension's own
    writes run their jobs themselves)."""
    model.Session().info.setdefault(_UPLOADED, {})[resource_id] = path
    resource = model.Session.get(model.Resource, resource_id)
    if resource is not None and not ckan_rows.WRITING.get():
        resource_jobs.file_arrived(resource, registered=False)


_UPLOADED = "dcor_depot_uploaded_files"


def _uploads_committed(session) -> None:
    if not session.in_nested_transaction():  # not a savepoint: the files stay
        session.info.pop(_UPLOADED, None)
        _forget_transaction(session)


def _uploads_rolled_back(session) -> None:
    """Remove the files this transaction wrote (CKAN writes an upload before the rules
    that may refuse it run): a refused request leaves nothing on the disk that no quota
    counts and no prune removes."""
    if session.in_nested_transaction():
        _forget_transaction(session, savepoint=True)
        return
    _forget_transaction(session)
    for path in session.info.pop(_UPLOADED, {}).values():
        with contextlib.suppress(FileNotFoundError):
            if not os.path.islink(path):
                os.remove(path)


if not sa.event.contains(model.Session, "after_rollback", _uploads_rolled_back):
    sa.event.listen(model.Session, "before_flush", _note_changes)
    sa.event.listen(model.Session, "after_commit", _uploads_committed)
    sa.event.listen(model.Session, "after_rollback", _uploads_rolled_back)


def uploaded_here(resource_id: str) -> bool:
    """This request (CKAN's database session) wrote the resource's file at CKAN's path:
    a file found there that it did not write was stored under the id before."""
    return resource_id in model.Session().info.get(_UPLOADED, ())


# what the registration of an upload must show


def register(
    resource_id: str,
    package: model.Package,
    given_size: Any,
    name: str | None,
    declared_sha256: str | None = None,
    acting_user_id: str | None = None,
) -> tuple[int, str]:
    """Check a new ``s3_upload`` resource as it is written (``rules.py``) against its
    grant, put its file in place and use the grant up: ``(size, url)`` of the object.
    A grant of a circle (DCOR-Aid) is registered by its user (``acting_user_id``) in a
    dataset of that circle, and bound to it.

    A staged upload must be there with the granted size; it is copied into the
    circle bucket with the extension's metadata (the dataset, the size, the
    MD5 declared at the grant and ``declared_sha256``, which the s3-sha256 job
    checks); the grant is marked registered. An upload granted before the staging
    area is refused. A dataset that moved to another circle since its grant must
    fit that circle's quota.
    """
    store = config.object_store()
    if store is None:
        raise tk.ValidationError(
            {"url_type": ["This site has no object store: s3_upload resources are off"]}
        )
    if package is None:
        raise tk.ValidationError({"package_id": ["The dataset does not exist"]})
    upload_route.require_circle(package)
    grant = grants.get(resource_id, lock=True)
    if grant is None:
        raise tk.ValidationError(
            {
                "id": [
                    f"No upload of resource {resource_id} is pending (never granted, or "
                    "pruned after it expired): register with the resource id that "
                    "dcor_depot_upload_urls returned, or ask it for an upload"
                ]
            }
        )
    if grant.package_id is None:  # granted to a circle: by its user, into that circle
        if (
            grant.owner_org != package.owner_org
            or grant.user_id is None
            or grant.user_id != acting_user_id
        ):
            raise tk.ValidationError(
                {
                    "id": [
                        f"The upload of resource {resource_id} was issued to another user or circle"
                    ]
                }
            )
    elif grant.package_id != package.id:
        raise tk.ValidationError(
            {"id": [f"The upload of resource {resource_id} was issued for another dataset"]}
        )
    upload_route.refuse_ended(grant, field="id", rollback=False)
    upload_route.refuse_unstaged(store, grant, field="id")
    if grant.owner_org != package.owner_org:  # moved while the upload was pending
        grants.lock_circle(package.owner_org)
        upload_route.check_quota(package, grant.size, "id", resource_id)
    location = placement.object_location(store, package.owner_org, resource_id)
    try:
        size = _put_in_place(store, grant, package.id, location, given_size, name, declared_sha256)
    except S3Error as exc:
        raise upload_route.store_failed("id", exc) from exc
    # committed with the new resource; the s3-sha256 job deletes its staged object
    grants.update(resource_id, state=grants.REGISTERED, package_id=package.id)
    return size, upload_route.download_url(package.id, resource_id, name)


def _put_in_place(
    store: ObjectStore,
    grant: grants.Grant,
    package_id: str,
    location: placement.ObjectLocation,
    given_size: Any,
    name: str | None,
    declared_sha256: str | None,
) -> int:
    """Check the staged object and copy it to ``location`` (``storage/s3/staging.py``)."""
    try:
        info = store.staged_info(grant.key)
    except StagedObjectUnreadable as exc:
        raise tk.ValidationError(
            {
                "id": [
                    f"{exc}: ask dcor_depot_upload_urls with resource_id "
                    f"{grant.resource_id} for a new URL, send the file, then register it"
                ]
            }
        ) from None
    if info is None:
        raise tk.ValidationError(
            {
                "id": [
                    f"No file was uploaded for resource {grant.resource_id}: send it with the "
                    "URLs of dcor_depot_upload_urls (a multipart upload must also be "
                    "completed), then register it"
                ]
            }
        )
    _refuse_other_size(grant, info.size, given_size)
    metadata = {DATASET_METADATA: package_id, SIZE_METADATA: str(info.size)}
    if grant.md5:
        metadata[MD5_METADATA_KEY] = grant.md5
    if declared_sha256:
        metadata[DECLARED_SHA256_METADATA] = declared_sha256
    try:
        store.copy_staged(
            grant.key, info, *location, metadata, upload_route.served_headers(name or grant.name)
        )
    except StagedObjectChanged as exc:
        raise tk.ValidationError({"id": [str(exc)]}) from exc
    return info.size


def _refuse_other_size(grant: grants.Grant, size: int, given: Any) -> None:
    if size != grant.size:
        raise tk.ValidationError(
            {
                "size": [
                    f"The uploaded object has {size} bytes, the upload was issued for "
                    f"{grant.size}: parts are missing; upload the file again with new URLs"
                ]
            }
        )
    if given not in (None, "") and str(given) != str(size):
        raise tk.ValidationError(
            {
                "size": [
                    f"size is {given}, but the uploaded file of resource {grant.resource_id} "
                    f"has {size} bytes"
                ]
            }
        )
