"""Where the files of a dataset are, where they belong, and who may read them.

The one place for these facts. :func:`dataset_files` derives them from
CKAN's database and the extension's table (``depot_files.file_records``): for
every artifact (resource, condensed, preview) of every resource the bucket
of the dataset's *current* circle and the key (:func:`object_location`),
where its verified object was last recorded, whether anonymous reading is
allowed (one rule, :func:`readable_by_all`), where CKAN keeps its local file
(:func:`ckan_path`), its depot copy (:func:`depot_path`, :func:`figshare_path`) and
its local backup copy (:func:`backup_path`).
Every job, view and command asks it; no other code derives a bucket, a key, an
``s3_url`` or a path of a file. A dataset without a circle has no bucket:
:class:`errors.NoCircle`, raised here only.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ckan.model as model
import ckan.plugins.toolkit as tk

from . import config, resource_fields
from .errors import JobError, NoCircle, failure_text
from .model import ckan_rows, depot_files
from .resource_fields import FILE_URL_TYPES, S3_UPLOAD_ERROR_FIELD
from .storage.depot import artifact_path, backup_path_for, depot_path_for, figshare_depot_path
from .storage.s3 import ARTIFACTS, ObjectStore, UploadResult, object_key


def require_circle(dataset_name: str, owner_org: str | None) -> str:
    """The dataset's circle; :class:`NoCircle` when it has none."""
    if not owner_org:
        raise NoCircle(dataset_name)
    return owner_org


class ObjectLocation(NamedTuple):
    """The bucket and key of one object."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def circle_bucket(store: ObjectStore, owner_org: str) -> str:
    """The bucket of a circle."""
    return store.circle_bucket(owner_org)


def staged_key(resource_id: str) -> str:
    """The key of a resource's upload in the staging bucket."""
    return object_key("resource", resource_id)


def local_artifact(ckan_file: Path, artifact: str) -> Path:
    """Where an artifact of a file uploaded to CKAN lies beside it (``PATH_condensed.rtdc``,
    ``PATH_preview.jpg``; the resource: the file itself)."""
    return artifact_path(ckan_file, artifact)


def object_location(
    store: ObjectStore, owner_org: str, resource_id: str, artifact: str = "resource"
) -> ObjectLocation:
    """Which bucket and key an artifact of a resource of a dataset in circle ``owner_org`` has."""
    return ObjectLocation(circle_bucket(store, owner_org), object_key(artifact, resource_id))


def readable_by_all(
    private: bool,
    dataset_state: str,
    resource_state: str = "active",
    verified: bool = True,
    refused: bool = False,
) -> bool:
    """The one rule of who may read a file: anyone, exactly when its dataset is public and
    active, its resource active, and the file verified (its object recorded) and not
    refused; otherwise only whom CKAN lets read the dataset. Without a resource: whether
    the dataset's files may be public at all."""
    return (
        not private
        and dataset_state == "active"
        and resource_state == "active"
        and verified
        and not refused
    )


def is_public(package: Mapping[str, Any], resource: Mapping[str, Any], placed: PlacedFile) -> bool:
    """:func:`readable_by_all` for the dicts of CKAN's actions (what a download checked)
    and the file as placed: verified when its object is recorded in the extension's
    table (not by the resource's fields)."""
    return readable_by_all(
        package["private"],
        package["state"],
        resource["state"],
        verified=placed.recorded is not None,
        refused=bool(resource.get(S3_UPLOAD_ERROR_FIELD)),
    )


def s3_url(store: ObjectStore, location: ObjectLocation) -> str:
    """The ``s3_url`` a resource shows for an object (what ``resource_show`` says; the
    extension's table is what counts)."""
    return store.object_url(location.bucket, location.key)


def s3_fields(store: ObjectStore, artifact: str, result: UploadResult) -> dict[str, Any]:
    """The resource fields that record the verified object of an artifact."""
    if artifact == "resource":
        return {
            "sha256": result.sha256,
            "size": result.size,
            "etag": result.etag,
            "s3_available": True,
            "s3_url": s3_url(store, ObjectLocation(result.bucket, result.key)),
        }
    return {f"s3_{artifact}_sha256": result.sha256, f"s3_{artifact}_size": result.size}


def depot_path(dataset: ckan_rows.DatasetNames, resource: Mapping[str, Any]) -> Path:
    """Where the file of a resource uploaded to CKAN lies in the human-readable user depot
    (CKAN's path becomes a symlink to it)."""
    return depot_path_for(
        depots_path=config.depots_path(),
        users_depot_name=config.users_depot_name(),
        user_name=dataset.creator or "unknown-user",
        org_name=dataset.organization or "no-circle",
        package_id=dataset.id,
        package_name=dataset.name,
        resource_id=resource["id"],
        # an upload without a name is named after its file
        resource_name=resource.get("name") or (resource.get("url") or "").rsplit("/", 1)[-1],
    )


def figshare_path(dataset_name: str, resource_id: str, file_name: str) -> Path:
    """Where a file of the figshare mirror lies in the depots (without an object store)."""
    return figshare_depot_path(config.depots_path(), dataset_name, resource_id, file_name)


def backup_path(resource_id: str) -> Path | None:
    """Where the local backup copy of a file uploaded straight to S3 goes; None without
    ``dcor_object_store.local_backup_location``."""
    root = config.local_backup_location()
    return None if root is None else backup_path_for(root, resource_id)


def ckan_path(resource_id: str) -> Path:
    """Where CKAN keeps (or kept) an uploaded resource's file: its legacy path under
    ``ckan.storage_path``, as CKAN's uploader derives it, which may be a symlink into
    the depots (``ckanext.dcor_depot.depots_path``) and nowhere else."""
    root = tk.config.get("ckan.storage_path")
    if not root:
        raise JobError("ckan.storage_path is not set: CKAN stores no uploaded files here")
    parts = (resource_id[:3], resource_id[3:6], resource_id[6:])
    if any(not part or part in (".", "..") or "/" in part or "\0" in part for part in parts):
        raise JobError(f"{resource_id!r} is no resource id CKAN keeps a file under")
    first = os.path.join(_real(os.path.join(root, "resources")), parts[0])
    directory = os.path.join(first, parts[1])
    path = os.path.join(directory, parts[2])
    # the root's real path is known: only the id's own components may be symlinks
    linked_folder = os.path.islink(first) or os.path.islink(directory)
    real = os.path.realpath(path) if linked_folder or os.path.islink(path) else path
    depots = _real(config.depots_path())
    if linked_folder or (real != path and os.path.commonpath([depots, real]) != depots):
        raise JobError(
            f"CKAN's path of resource {resource_id} is a symlink that leads outside the "
            "depots (ckanext.dcor_depot.depots_path); check it by hand"
        )
    return Path(path)


@functools.lru_cache(maxsize=16)
def _real(folder: str) -> str:
    """The real path of a configured folder (the storage and depots roots), once per
    process: every upload asks for it several times."""
    return os.path.realpath(folder)


def missing_local_file(resource_id: str, path: Path | None) -> JobError:
    """The error of a job that cannot see the local file of a resource: where it
    looked, on which host, and what to share between hosts."""
    where = f"at {path}" if path is not None else "(ckan.storage_path is not set)"
    if path is not None and path.is_symlink():
        where += f", a symlink to {os.readlink(path)}, which this host cannot read"
    return JobError(
        f"The file of resource {resource_id} is missing {where} on host "
        f"{socket.gethostname()}. If workers run on other hosts than the web server, share "
        "ckan.storage_path and ckanext.dcor_depot.depots_path with them at the same path "
        "(README: Several hosts); then run `ckan run-jobs-dcor-depot`"
    )


@dataclasses.dataclass(frozen=True)
class PlacedFile:
    """One artifact of one resource: where it is, where it belongs, who may read it."""

    resource_id: str
    artifact: str
    #: "active", "deleted", or "gone" (CKAN has no row of the resource any more)
    resource_state: str
    url_type: str | None
    #: where the object belongs: the key in the bucket of the dataset's current
    #: circle; None without S3 or circle, and for a resource CKAN lost
    wanted: ObjectLocation | None
    #: where its verified object was last recorded; None: it has no verified object
    recorded: ObjectLocation | None
    sha256: str | None
    size: int | None
    etag: str | None
    #: an earlier copy of the object (before a move), still to delete
    moved_from: ObjectLocation | None
    #: anonymous reading allowed: public and active dataset, active resource, verified file
    public: bool
    #: CKAN's path of an uploaded file
    local: Path | None
    #: when CKAN lost the resource (its copies go after the retention period)
    purged: datetime.datetime | None
    #: recorded in the extension's table (False: only in the resource's fields)
    in_table: bool
    #: why the depot cannot place this file (an id an older version let in); it is never
    #: public and every command names it as a failed item
    problem: str | None = None

    @property
    def location(self) -> ObjectLocation | None:
        """Where to find the object now: where it was recorded, else where it belongs."""
        return self.recorded or self.wanted

    def require_location(self, dataset_name: str) -> ObjectLocation:
        """:attr:`location`; :class:`NoCircle` when the file has none (no circle)."""
        if self.location is None:
            raise NoCircle(dataset_name)
        return self.location

    def require_wanted(self, dataset_name: str) -> ObjectLocation:
        """:attr:`wanted`; :class:`NoCircle` when the file belongs nowhere (no circle)."""
        if self.wanted is None:
            raise NoCircle(dataset_name)
        return self.wanted

    @property
    def needs_move(self) -> bool:
        """The verified object lies in another circle's bucket than the dataset's."""
        return bool(self.recorded and self.wanted and self.recorded.bucket != self.wanted.bucket)


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    package_id: str
    #: None when CKAN has no row of the dataset any more (purged)
    name: str | None
    owner_org: str | None
    files: list[PlacedFile]

    def file(self, resource_id: str, artifact: str = "resource") -> PlacedFile | None:
        for placed in self.files:
            if (placed.resource_id, placed.artifact) == (resource_id, artifact):
                return placed
        return None


def dataset_files(
    store: ObjectStore | None, package_id: str, resource_ids: Iterable[str] | None = None
) -> DatasetFiles:
    """The files of a dataset (or of some of its resources), from the database as it is now."""
    ids = None if resource_ids is None else list(resource_ids)
    package, resources = ckan_rows.dataset_rows(package_id, ids)
    table = depot_files.file_records(
        package_ids=None if ids is not None else [package_id],
        resource_ids=ids,
        end_transaction=False,  # ended below, once the rows are read
    )
    by_resource: dict[str, dict[str, depot_files.FileRecord]] = {}
    for row in table:
        if row.package_id == package_id:
            by_resource.setdefault(row.resource_id, {})[row.artifact] = row
    files = []
    for rid in [*resources, *sorted(set(by_resource) - set(resources))]:
        found = resource_files(store, package, resources.get(rid), by_resource.get(rid, {}), rid)
        files.extend(found.values())
    if package is None:
        dataset = DatasetFiles(package_id, None, None, files)
    else:
        dataset = DatasetFiles(package_id, package.name, package.owner_org, files)
    model.Session.rollback()
    return dataset


def file_of(
    store: ObjectStore | None, package_id: str, resource_id: str, artifact: str = "resource"
) -> PlacedFile:
    """One artifact of one resource (:func:`dataset_files`); :class:`JobError` when it has none."""
    placed = dataset_files(store, package_id, [resource_id]).file(resource_id, artifact)
    if placed is None:
        raise JobError(f"Resource {resource_id} has no {artifact} file the depot keeps")
    return placed


def resource_files(
    store: ObjectStore | None,
    package: model.Package | None,
    resource: model.Resource | None,
    table: Mapping[str, depot_files.FileRecord],
    resource_id: str | None = None,
) -> dict[str, PlacedFile]:
    """The files of one resource by artifact, from its CKAN rows (None: lost) and the table's.

    A resource whose files cannot be derived (an id in another form, a field that does
    not parse) gets them with a ``problem``, private: one row never stops a command or a
    convergence of the others."""
    rid = resource.id if resource is not None else resource_id
    problem = id_problem(rid)
    if problem is None:
        try:
            return _resource_files(store, package, resource, table, rid)
        except Exception as exc:  # noqa: BLE001 - named by every command, the others go on
            problem = failure_text(exc)
    return unplaceable(rid, resource, table, problem)


def _resource_files(
    store: ObjectStore | None,
    package: model.Package | None,
    resource: model.Resource | None,
    table: Mapping[str, depot_files.FileRecord],
    rid: str,
) -> dict[str, PlacedFile]:
    if resource is None or package is None:
        state, url_type, extras, readable = "gone", None, {}, False
    else:
        state, url_type = resource.state, resource.url_type
        extras = dict(resource.extras or {})
        # verified: its object is recorded (below), not the resource's fields, which
        # the job writes after the record and which users must not be able to fake
        readable = readable_by_all(
            package.private, package.state, state, refused=bool(extras.get(S3_UPLOAD_ERROR_FIELD))
        )
    owner_org = package.owner_org if package is not None else None
    files = {}
    for artifact in ARTIFACTS:
        row = table.get(artifact)
        legacy = resource_fields.recorded_object(extras, artifact)
        keeps_file = url_type in FILE_URL_TYPES and artifact == "resource"
        if row is None and legacy is None and not keeps_file:
            continue
        wanted = None
        if store is not None and owner_org and state != "gone":
            wanted = object_location(store, owner_org, rid, artifact)
        files[artifact] = _placed(
            store, rid, artifact, state, url_type, wanted, row, extras, legacy, readable
        )
    return files


def id_problem(resource_id: str) -> str | None:
    """Why a resource id cannot name the depot's files, or None: only the canonical form of
    a UUID does (CKAN stored any form ``uuid.UUID`` parses, as given; ``logic/rules.py`` now
    refuses the others when a resource is created)."""
    try:
        canonical = str(uuid.UUID(resource_id))
    except (TypeError, ValueError):
        canonical = None
    if canonical == resource_id:
        return None
    return (
        f"Resource id {resource_id!r} is not in the canonical form of a UUID (lower-case, "
        f"with hyphens{f': {canonical}' if canonical else ''}) by which the depot names its "
        "files; an older version let it in. Give the resource a new id, or remove it"
    )


def unplaceable(
    resource_id: str,
    resource: model.Resource | None,
    table: Mapping[str, depot_files.FileRecord],
    problem: str,
) -> dict[str, PlacedFile]:
    """The files of a resource the depot cannot place (its id, a row it cannot read): what
    the table recorded, private, with the ``problem``."""
    state = "gone" if resource is None else resource.state
    url_type = None if resource is None else resource.url_type
    files = {}
    artifacts = set(table) | ({"resource"} if url_type in FILE_URL_TYPES else set())
    for artifact in sorted(artifacts):
        row = table.get(artifact)
        recorded = ObjectLocation(row.bucket, row.key) if row and row.bucket else None
        files[artifact] = PlacedFile(
            resource_id=resource_id,
            artifact=artifact,
            resource_state=state,
            url_type=url_type,
            wanted=None,
            recorded=recorded,
            sha256=row.sha256 if row else None,
            size=row.size if row else None,
            etag=row.etag if row else None,
            moved_from=None,
            public=False,
            local=None,
            purged=row.purged if row else None,
            in_table=row is not None,
            problem=problem,
        )
    return files


def _placed(
    store: ObjectStore | None,
    resource_id: str,
    artifact: str,
    state: str,
    url_type: str | None,
    wanted: ObjectLocation | None,
    row: depot_files.FileRecord | None,
    extras: dict[str, Any],
    legacy: tuple[str, int] | None,
    public: bool,
) -> PlacedFile:
    recorded = moved_from = None
    sha256 = size = etag = None
    if row is not None and row.bucket:
        recorded = ObjectLocation(row.bucket, row.key)
        sha256, size, etag = row.sha256, row.size, row.etag
        if row.moved_from:
            moved_from = ObjectLocation(row.moved_from, row.key)
    elif legacy is not None:
        # recorded before the extension's table existed: in the resource's fields
        url = extras.get("s3_url") if artifact == "resource" else None
        bucket = store.bucket_of_url(url) if url and store is not None else None
        bucket = bucket or (wanted.bucket if wanted else None)
        if bucket:
            recorded = ObjectLocation(bucket, object_key(artifact, resource_id))
            sha256, size = legacy
            etag = extras.get("etag") if artifact == "resource" else None
    local = None
    if (url_type == "upload" or state == "gone") and artifact == "resource":
        try:
            local = ckan_path(resource_id)
        except JobError:
            local = None
    return PlacedFile(
        resource_id=resource_id,
        artifact=artifact,
        resource_state=state,
        url_type=url_type,
        wanted=wanted,
        recorded=recorded,
        sha256=sha256,
        size=size,
        etag=etag,
        moved_from=moved_from,
        public=public and recorded is not None,  # verified: its object is recorded
        local=local,
        purged=row.purged if row is not None else None,
        in_table=row is not None,
    )
