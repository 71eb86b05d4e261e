"""Which of the depot's jobs a resource still needs (for ``ckan run-jobs-dcor-depot``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import ckan.model as model

from .. import errors, placement, resource_fields
from ..model import ckan_rows, depot_files
from ..storage.s3 import ObjectStore


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A resource with a file, what its dataset says about it, and where its files are."""

    resource_id: str
    url_type: str
    url: str
    name: str
    size: int | None
    mimetype: str | None
    extras: dict[str, Any]
    package_id: str
    package_name: str
    owner_org: str | None
    #: the resource's files by artifact (:func:`placement.resource_files`)
    files: dict[str, placement.PlacedFile] = dataclasses.field(default_factory=dict)

    @property
    def problem(self) -> str | None:
        """Why the depot cannot handle this resource's files (``PlacedFile.problem``)."""
        return next((f.problem for f in self.files.values() if f.problem), None)

    @property
    def fields(self) -> dict[str, Any]:
        """The resource's fields as ``resource_show`` has them (those the depot reads)."""
        return {
            **self.extras,
            "id": self.resource_id,
            "url_type": self.url_type,
            "size": self.size,
            "url": self.url,
            "name": self.name,
            "mimetype": self.mimetype,
        }


def candidates(
    store: ObjectStore | None,
    modified_days: int | None = None,
    package_id: str | None = None,
    url_types: tuple[str, ...] | None = ("upload",),
) -> Iterator[Candidate]:
    """Active resources of datasets that are not deleted, newest first.

    ``url_types``: only resources of these kinds; by default those uploaded
    to CKAN (a file on block storage once); None: all.
    """
    found = ckan_rows.active_resources(modified_days, package_id, url_types)
    table: dict[str, dict[str, depot_files.FileRecord]] = {}
    ids = [res.id for res, _ in found]
    for start in range(0, len(ids), 1000):
        for row in depot_files.file_records(resource_ids=ids[start : start + 1000]):
            table.setdefault(row.resource_id, {})[row.artifact] = row
    rows = [
        Candidate(
            resource_id=res.id,
            url_type=res.url_type or "",
            url=res.url or "",
            name=res.name or "",
            size=res.size,
            mimetype=res.mimetype,
            extras=dict(res.extras or {}),
            package_id=pkg.id,
            package_name=pkg.name,
            owner_org=pkg.owner_org,
            files=placement.resource_files(store, pkg, res, table.get(res.id, {})),
        )
        for res, pkg in found
    ]
    # the jobs commit and expire the session: hand out plain values only
    model.Session.rollback()
    yield from rows


def missing_jobs(candidate: Candidate, store: ObjectStore | None) -> list[str]:
    """Kinds of job (those of ``resource_jobs.RESOURCE_JOBS`` and ``converge``) still to run.

    Raises :class:`errors.JobError` when no job can help: the file is gone
    from CKAN's path and from S3.
    """
    if candidate.problem:
        raise errors.JobError(candidate.problem)
    if candidate.url_type == resource_fields.S3_URL_TYPE:
        return _missing_for_file_in_s3(candidate, store) + _missing_dc_metadata(candidate)
    placed = candidate.files["resource"]
    missing = []
    path = placed.local
    local = path is not None and path.is_file()
    if local and not path.is_symlink():
        missing.append("symlink")
    on_s3 = placed.recorded is not None
    if store is not None:
        visible = store.visibility(*placed.recorded) if placed.recorded else None
        if visible is None:
            on_s3 = False
            if local:  # without a circle the upload step says what to do
                missing.append("s3-upload")
        elif visible != placed.public or placed.needs_move:
            missing.append("converge")
    if not local and not on_s3:
        raise errors.JobError(f"the file is missing at {path} and there is no verified S3 object")
    return missing + _missing_dc_metadata(candidate)


def _missing_for_file_in_s3(candidate: Candidate, store: ObjectStore | None) -> list[str]:
    """A file that went straight to S3: its recorded SHA-256, visibility and local backup."""
    if store is None:
        raise errors.JobError("the file is in S3, but dcor_object_store.endpoint_url is not set")
    placed = candidate.files["resource"]
    placed.require_location(candidate.package_name)
    refused = candidate.extras.get(resource_fields.S3_UPLOAD_ERROR_FIELD)
    if refused:
        raise errors.JobError(refused)
    visible = store.visibility(*placed.location)
    if visible is None:
        raise errors.JobError(f"its object {placed.location} is missing")
    missing = []
    if placed.recorded is None:
        missing.append("s3-sha256")  # applies the visibility too
    elif visible != placed.public or placed.needs_move:
        missing.append("converge")
    backup = placement.backup_path(candidate.resource_id)
    if backup is not None and not backup.is_file():
        missing.append("backup")
    return missing


def _missing_dc_metadata(candidate: Candidate) -> list[str]:
    recorded = resource_fields.has_dc_metadata(candidate.extras)
    return ["dc-metadata"] if resource_fields.is_dc_file(candidate.fields) and not recorded else []
