"""Which of the depot's jobs a resource still needs (for ``ckan run-jobs-dcor-depot``)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator
from typing import Any

import ckan.model as model
import sqlalchemy as sa

from ..storage.s3 import ObjectStore, object_key
from . import site
from .dc_metadata import DC_ERROR_FIELD


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A resource with an uploaded file and what its dataset says about it."""

    resource_id: str
    url: str
    name: str
    size: int | None
    extras: dict[str, Any]
    package_id: str
    package_name: str
    owner_org: str | None
    public: bool

    @property
    def fields(self) -> dict[str, Any]:
        """The resource's fields as ``resource_show`` has them (those the depot reads)."""
        return {**self.extras, "size": self.size, "url": self.url, "name": self.name}


def candidates(
    modified_days: int | None = None, package_id: str | None = None, uploads_only: bool = True
) -> Iterator[Candidate]:
    """Active resources of datasets that are not deleted, newest first.

    ``uploads_only``: only those uploaded to CKAN (a file on block storage
    once), not those that went to S3 directly.
    """
    query = (
        model.Session.query(model.Resource, model.Package)
        .join(model.Package, model.Package.id == model.Resource.package_id)
        .filter(model.Resource.state == "active", model.Package.state != "deleted")
        .order_by(model.Package.metadata_modified.desc(), model.Resource.position)
    )
    if uploads_only:
        query = query.filter(model.Resource.url_type == "upload")
    if package_id is not None:
        query = query.filter(model.Package.id == package_id)
    if modified_days is not None:
        cutoff = datetime.datetime.utcnow() - datetime.timedelta(days=modified_days)
        query = query.filter(
            sa.or_(
                model.Resource.metadata_modified >= cutoff,
                model.Package.metadata_modified >= cutoff,
            )
        )
    rows = [
        Candidate(
            resource_id=res.id,
            url=res.url or "",
            name=res.name or "",
            size=res.size,
            extras=dict(res.extras or {}),
            package_id=pkg.id,
            package_name=pkg.name,
            owner_org=pkg.owner_org,
            public=site.visible_to_all(pkg.private, pkg.state),
        )
        for res, pkg in query
    ]
    # the jobs commit and expire the session: hand out plain values only
    model.Session.rollback()
    yield from rows


def missing_jobs(candidate: Candidate, store: ObjectStore | None) -> list[str]:
    """Kinds of job (``symlink``, ``s3-upload``, ``visibility``, ``dc-metadata``) still to run.

    Raises :class:`site.JobError` when no job can help: the file is gone
    from CKAN's path and from S3.
    """
    missing = []
    path = site.ckan_path(candidate.resource_id)
    local = path.is_file()
    if local and not path.is_symlink():
        missing.append("symlink")
    on_s3 = site.recorded_object(candidate.fields, "resource") is not None
    if store is not None:
        # no circle, no bucket: the upload job then says what to do
        visible = (
            store.visibility(
                store.circle_bucket(candidate.owner_org),
                object_key("resource", candidate.resource_id),
            )
            if candidate.owner_org
            else None
        )
        if not on_s3 or visible is None:
            on_s3 = False
            if local:
                missing.append("s3-upload")
        elif visible != candidate.public:
            missing.append("visibility")
    if not local and not on_s3:
        raise site.JobError(f"the file is missing at {path} and there is no verified S3 object")
    if site.is_dc_file(candidate.fields) and not (
        DC_ERROR_FIELD in candidate.extras or any(k.startswith("dc:") for k in candidate.extras)
    ):
        missing.append("dc-metadata")
    return missing
