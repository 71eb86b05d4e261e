"""The extension's record of files (``dcor_depot_file``): each file's dataset and the
location and checksum of its verified object, kept when CKAN loses the resource."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
from collections.abc import Iterable, Iterator

import ckan.model as model
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from ..errors import JobError
from ..resource_fields import FILE_URL_TYPES
from ..storage.s3 import UploadResult
from .tables import file_table


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
    end_transaction: bool = True,
) -> list[FileRecord]:
    """Rows of the table, of some datasets, resources, or purged before a moment (or all).
    ``end_transaction=False``: the caller ends the read's transaction (a rollback expires
    the rows it read before)."""
    query = sa.select(file_table)
    if package_ids is not None:
        query = query.where(file_table.c.package_id.in_(list(package_ids)))
    if resource_ids is not None:
        query = query.where(file_table.c.resource_id.in_(list(resource_ids)))
    if purged_before is not None:
        query = query.where(file_table.c.purged < purged_before)
    with plugin_tables():
        rows = model.Session.execute(query).all()
        if end_transaction:
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


def kept_records() -> list[FileRecord]:
    """The rows of files CKAN has not lost (not purged)."""
    with plugin_tables():
        rows = model.Session.execute(
            sa.select(file_table).where(file_table.c.purged.is_(None))
        ).all()
    return [FileRecord(**row._mapping) for row in rows]


def verified_bytes_by_dataset() -> dict[str, int]:
    """Dataset id -> bytes of its verified objects (of files CKAN has not lost)."""
    with plugin_tables():
        rows = model.Session.execute(
            sa.select(file_table.c.package_id, sa.func.sum(file_table.c.size))
            .where(file_table.c.purged.is_(None), file_table.c.bucket.is_not(None))
            .group_by(file_table.c.package_id)
        ).all()
    return {package_id: total or 0 for package_id, total in rows}


def datasets_with_files() -> list[str]:
    """Ids of every dataset CKAN or the extension's table knows files of (deleted ones too)."""
    in_ckan = sa.select(model.Resource.package_id).where(
        model.Resource.url_type.in_(FILE_URL_TYPES)
    )
    in_table = sa.select(file_table.c.package_id)
    with plugin_tables():
        ids = model.Session.execute(sa.union(in_ckan, in_table)).scalars().all()
    model.Session.rollback()
    return sorted(ids)
