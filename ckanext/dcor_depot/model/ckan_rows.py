"""Reads and writes of CKAN's rows of datasets and resources, as the extension does them:
in the site user's context, fresh dicts from the rows alone, resource patches that
neither race nor fire the depot's hooks again, the dataset's row lock."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa
from ckan.lib.dictization import model_dictize

from ..errors import JobError
from ..resource_fields import FILE_URL_TYPES, JOB_CONTEXT_KEY

#: True while the extension itself writes through a CKAN action (:func:`write_action`).
WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("dcor_depot_writing", default=False)


def write_action(action: str, data: dict[str, Any]) -> dict[str, Any]:
    """Call a CKAN action as the extension: the site user, the plugin's hooks
    skip it, and the write rules (``logic/rules.py``) lets the recorded fields through."""
    token = WRITING.set(True)
    try:
        return tk.get_action(action)(job_context(), data)
    finally:
        WRITING.reset(token)


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


def patch_resource(resource_id: str, fields: Mapping[str, Any]) -> tuple[str, bool]:
    """Set ``fields`` on a resource unless they already hold these values.

    Returns its dataset's id, and True when something changed; see
    :func:`patch_resources`.
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
    return package_id, bool(changed)


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
    write rules (``logic/rules.py``) restore in it what was recorded here. The dataset's
    ``metadata_modified`` changes, so ``package_show`` reads the database
    until the search index has it again: the jobs patch through
    :func:`jobs.index.patch_resources`, which queues one index update per dataset for
    any number of patches. Fields
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


def committed_resources(resource_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What is committed (as another connection sees it) under each of ``resource_ids``,
    in one statement: the resource's row (``row``; its dataset ``package_id``, ``url``,
    ``url_type``, ``size``, ``extras``, ``state``), the datasets the extension recorded a
    file of it for (``recorded_for``), a pending upload grant (``granted``), and
    ``has_file``: the resource holds a file, now or before (a file the extension recorded
    counts, also when CKAN lost the resource's row)."""
    ids = list(dict.fromkeys(resource_ids))
    if not ids:
        return {}
    with model.meta.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT i.id, r.id IS NOT NULL AS row, r.package_id, r.url, r.url_type, "
                "r.size, r.extras, r.state, "
                "ARRAY(SELECT DISTINCT f.package_id FROM dcor_depot_file f "
                "WHERE f.resource_id = i.id) AS recorded_for, "
                "EXISTS(SELECT 1 FROM dcor_depot_upload u WHERE u.resource_id = i.id) AS granted "
                "FROM unnest(CAST(:ids AS text[])) AS i(id) LEFT JOIN resource r ON r.id = i.id"
            ),
            {"ids": ids},
        ).all()
    committed = {}
    for row in rows:
        extras = row.extras
        if isinstance(extras, str):
            extras = json.loads(extras or "{}")
        committed[row.id] = {
            "row": row.row,
            "package_id": row.package_id,
            "url": row.url,
            "url_type": row.url_type,
            "size": row.size,
            "extras": dict(extras or {}),
            "state": row.state,
            "recorded_for": list(row.recorded_for),
            "granted": row.granted,
            "has_file": row.url_type in FILE_URL_TYPES or bool(row.recorded_for),
        }
    return committed


def new_resource_ids(
    package_id: str, resource_ids: list[str], lock: bool
) -> dict[str, dict[str, Any]]:
    """:func:`committed_resources` of ids whose resource rows CKAN's transaction inserted
    (so no committed row has them), read in that transaction in one statement, before it
    records anything under them; ``lock``: the dataset's row is locked in the same
    statement (:func:`lock_dataset`), for what the transaction reads later. (The records
    and grants read here may predate a commit the lock waited for; no such commit writes
    under an id that no committed resource has.)"""
    ids = "unnest(CAST(:ids AS text[])) AS i(id)"
    if lock:  # the locked row is read, joined to every id (or none)
        ids = (
            f"(SELECT 1 FROM package WHERE id = :package FOR UPDATE) AS l RIGHT JOIN {ids} ON true"
        )
    rows = model.Session.execute(
        sa.text(
            "SELECT i.id, "
            "ARRAY(SELECT DISTINCT f.package_id FROM dcor_depot_file f "
            "WHERE f.resource_id = i.id) AS recorded_for, "
            "EXISTS(SELECT 1 FROM dcor_depot_upload u WHERE u.resource_id = i.id) AS granted "
            f"FROM {ids}"
        ),
        {"ids": resource_ids, "package": package_id},
    ).all()
    return {
        row.id: {
            "row": False,
            "package_id": None,
            "url": None,
            "url_type": None,
            "size": None,
            "extras": {},
            "state": None,
            "recorded_for": list(row.recorded_for),
            "granted": row.granted,
            "has_file": bool(row.recorded_for),
        }
        for row in rows
    }


def datasets_holding_id(resource_id: str) -> list[str]:
    """The datasets (committed) that hold an id: a resource, a file recorded under it, or
    a pending upload."""
    with model.meta.engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT package_id FROM resource WHERE id = :id UNION "
                    "SELECT package_id FROM dcor_depot_file WHERE resource_id = :id UNION "
                    "SELECT package_id FROM dcor_depot_upload WHERE resource_id = :id"
                ),
                {"id": resource_id},
            ).scalars()
        )


@dataclasses.dataclass(frozen=True)
class Visibility:
    """What decides where a dataset's files belong and who may read them (committed)."""

    id: str
    owner_org: str | None
    private: bool
    state: str
    #: (resource id, state) of every resource that is not active
    inactive: list[tuple[str, str]]


def committed_visibility(name_or_id: str) -> Visibility | None:
    """:class:`Visibility` of a dataset as committed, in one statement on a connection of
    its own (leaves no transaction open in CKAN's session); None when there is no such
    dataset."""
    with model.meta.engine.connect() as connection:
        return _visibility(connection, name_or_id)


def visibility_to_commit(name_or_id: str) -> Visibility | None:
    """:class:`Visibility` of a dataset as CKAN's transaction is about to commit it (read
    in that transaction, its changes flushed): what the commit makes of it, because a
    transaction that changes what decides a dataset's visibility (CKAN updates the
    dataset's row with every such change) holds its row until it ends. A transaction
    that did not write the row reads what is committed, as a read after the commit
    would."""
    model.Session.flush()
    return _visibility(model.Session, name_or_id)


def _visibility(connection, name_or_id: str) -> Visibility | None:
    inactive = "FROM resource r WHERE r.package_id = p.id AND r.state != 'active' ORDER BY r.id"
    found = connection.execute(
        sa.text(
            "SELECT p.id, p.owner_org, p.private, p.state, "
            f"ARRAY(SELECT r.id {inactive}) AS inactive_ids, "
            f"ARRAY(SELECT r.state {inactive}) AS inactive_states "
            "FROM package p WHERE p.id = :x OR p.name = :x "
            "ORDER BY p.id = :x DESC LIMIT 1"  # the id first: names are free to choose
        ),
        {"x": name_or_id},
    ).first()
    if found is None:
        return None
    return Visibility(
        found.id,
        found.owner_org,
        found.private,
        found.state,
        list(zip(found.inactive_ids, found.inactive_states, strict=True)),
    )


def committed_circle(package_id: str) -> tuple[bool, str | None]:
    """Whether the dataset is committed, and its committed circle."""
    with model.meta.engine.connect() as connection:
        found = connection.execute(
            sa.text("SELECT owner_org FROM package WHERE id = :id"), {"id": package_id}
        ).first()
    return (False, None) if found is None else (True, found.owner_org)


def resource_sizes(package_id: str) -> list[tuple[str, str | None, int | None]]:
    """``(id, url_type, size)`` of every resource row of a dataset (deleted ones too)."""
    return list(
        model.Session.query(model.Resource.id, model.Resource.url_type, model.Resource.size)
        .filter(model.Resource.package_id == package_id)
        .all()
    )


def any_active_resource() -> tuple[str, str] | None:
    """``(resource id, dataset id)`` of some active resource, or None."""
    row = (
        model.Session.query(model.Resource.id, model.Resource.package_id)
        .filter(model.Resource.state == "active")
        .limit(1)
        .first()
    )
    return None if row is None else (row.id, row.package_id)


def resource_ids(state: str) -> Iterator[str]:
    """Ids of every resource in a state: active (of active datasets), draft (active, of
    draft datasets), deleted (deleted resources and those of deleted datasets), or all."""
    query = (
        model.Session.query(model.Resource.id)
        .join(model.Package, model.Package.id == model.Resource.package_id)
        .order_by(model.Resource.id)
    )
    live = model.Resource.state == "active"
    if state == "active":
        query = query.filter(live, model.Package.state == "active")
    elif state == "draft":
        query = query.filter(live, model.Package.state == "draft")
    elif state == "deleted":
        query = query.filter(~live | (model.Package.state == "deleted"))
    for (resource_id,) in query.yield_per(1000):
        yield resource_id


def active_resources(
    modified_days: int | None = None,
    package_id: str | None = None,
    url_types: tuple[str, ...] | None = None,
) -> list[tuple[model.Resource, model.Package]]:
    """Active resources of datasets that are not deleted, with their dataset, newest
    first (``url_types``: of these kinds only; ``modified_days``: changed since)."""
    query = (
        model.Session.query(model.Resource, model.Package)
        .join(model.Package, model.Package.id == model.Resource.package_id)
        .filter(model.Resource.state == "active", model.Package.state != "deleted")
        .order_by(model.Package.metadata_modified.desc(), model.Resource.position)
    )
    if url_types is not None:
        query = query.filter(model.Resource.url_type.in_(url_types))
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
    return list(query)


def audited_resource_ids() -> set[str]:
    """Ids of the active resources of datasets that are not deleted."""
    return set(
        model.Session.execute(
            sa.select(model.Resource.id)
            .join(model.Package, model.Package.id == model.Resource.package_id)
            .where(model.Resource.state == "active", model.Package.state != "deleted")
        ).scalars()
    )


def all_resource_ids() -> set[str]:
    """Ids of every resource row CKAN has."""
    return set(model.Session.execute(sa.select(model.Resource.id)).scalars())


def circle_names() -> dict[str, str]:
    """Circle (organization or group) id -> name."""
    return dict(model.Session.execute(sa.select(model.Group.id, model.Group.name)).all())


def dataset_circles() -> dict[str, tuple[str, str | None, str | None]]:
    """Dataset id -> (name, circle name, circle title); None without a circle."""
    query = sa.select(model.Package.id, model.Package.name, model.Group.name, model.Group.title)
    query = query.outerjoin(model.Group, model.Group.id == model.Package.owner_org)
    return {pid: (name, circle, title) for pid, name, circle, title in model.Session.execute(query)}


def datasets_of(resource_ids: Iterable[str]) -> dict[str, str]:
    """Resource id -> dataset id, of those that have a row."""
    ids = list(resource_ids)
    if not ids:
        return {}
    query = sa.select(model.Resource.id, model.Resource.package_id)
    return dict(model.Session.execute(query.where(model.Resource.id.in_(ids))).all())


def dataset_rows(
    package_id: str, resource_ids: Iterable[str] | None = None
) -> tuple[model.Package | None, dict[str, model.Resource]]:
    """A dataset's row (fresh from the database) and its resources' (of all, or of
    ``resource_ids``), in the dataset's order."""
    model.Session.expire_all()
    package = model.Session.get(model.Package, package_id)
    rows = (
        model.Session.query(model.Resource)
        .filter(model.Resource.package_id == package_id)
        .order_by(model.Resource.position, model.Resource.id)
    )
    if resource_ids is not None:
        rows = rows.filter(model.Resource.id.in_(list(resource_ids)))
    return package, {row.id: row for row in rows}
