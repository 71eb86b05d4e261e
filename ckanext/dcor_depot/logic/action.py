"""The extension's actions: the direct-to-S3 upload route, CKAN's ``dataset_purge``
chained so that what a purge removes is recorded before it is gone, and CKAN's
``package_owner_org_update`` chained so that a dataset moves only into a circle it fits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.types import Context, DataDict

from .. import resource_fields
from ..jobs import converge, queue
from ..model import ckan_rows, depot_files
from . import rules, schema, upload_route

__all__ = ["dcor_depot_upload_urls", "dataset_purge", "package_owner_org_update"]


def dcor_depot_upload_urls(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Authorize an upload of one file straight into the dataset's circle bucket,
    or resume a pending one.

    The URLs write only the new resource's object, only once, only with the
    given size, and expire after ``ckanext.dcor_depot.upload_url_expiry``
    seconds. Register the upload afterwards with ``resource_create`` and the
    answer's ``register.data``. Asked again with ``resource_id``, the answer
    lists the parts the store already holds (``parts_done``) and fresh URLs
    for the other parts only.

    :param package_id: id or name of the dataset
    :param name: the file's name, e.g. ``cells.rtdc`` (not with ``resource_id``)
    :param size: the file's size in bytes (not with ``resource_id``)
    :param md5: (optional) the file's MD5 as hex: a single PUT of other bytes is
        refused, a multipart upload is checked after registration
    :param resource_id: (optional) resume the pending upload of this resource
    :returns: ``resource_id``, ``expires``, ``upload`` (``method`` ``PUT`` with
        ``url`` and ``headers``; ``multipart`` with ``upload_id``,
        ``part_size``, ``parts``, ``parts_done`` and the ``complete`` and
        ``abort`` URLs; or ``done`` when the store holds the whole file) and
        ``register``
    """
    if not data_dict.get("package_id"):
        raise tk.ValidationError({"package_id": [tk._("Missing value")]})
    # who may not add resources learns nothing about the dataset, not even that it exists
    tk.check_access("dcor_depot_upload_urls", context, {"package_id": data_dict.get("package_id")})
    if data_dict.get("resource_id"):
        data, errors = tk.navl_validate(data_dict, schema.resume_upload_urls(), context)
        if errors:
            raise tk.ValidationError(errors)
        return upload_route.resume_upload_urls(data["package_id"], data["resource_id"])
    data, errors = tk.navl_validate(data_dict, schema.upload_urls(), context)
    if errors:
        raise tk.ValidationError(errors)
    user = context.get("auth_user_obj")
    return upload_route.issue_upload_urls(
        data["package_id"], data["name"], data["size"], data.get("md5"), getattr(user, "id", None)
    )


@tk.chained_action
def dataset_purge(original, context: Context, data_dict: DataDict):
    """CKAN's dataset_purge, after recording the dataset's files as purged.

    The records are written in the purge's own transaction: a purge that
    fails records nothing. Once it committed, the dataset converges: its
    objects become private and its local copies unreadable; they are removed
    after ``ckanext.dcor_depot.purge_retention_days`` by
    ``ckan dcor-prune-orphaned-objects``.
    """
    package = model.Package.get(data_dict.get("id") or "")
    if package is None:
        return original(context, data_dict)
    tk.check_access("dataset_purge", context, data_dict)
    package_id, owner_org = package.id, package.owner_org
    rows = ckan_rows.resource_sizes(package_id)
    # each file with its size and circle: its bytes count against that circle's quota
    # until they are pruned
    kept = {rid: size for rid, url_type, size in rows if url_type in resource_fields.FILE_URL_TYPES}
    for row in depot_files.file_records(package_ids=[package_id]):
        kept.setdefault(row.resource_id, row.size)
    for resource_id, size in kept.items():
        depot_files.record_file(package_id, resource_id, False, size, owner_org)
    depot_files.mark_purged(kept, commit=False)
    result = original(context, data_dict)
    circle = owner_org or converge.NO_CIRCLE_LINE  # its row is gone: named here
    queue.queue_or_log(converge.request_convergence, package_id, circle)
    return result


@tk.chained_action
def package_owner_org_update(original, context: Context, data_dict: DataDict):
    """CKAN's package_owner_org_update (``package_create`` and ``package_update`` call it
    too, with the new circle), after checking that the dataset's files and pending
    uploads fit the new circle's quota (``ckanext.dcor_depot.circle_quota_gib``)."""
    package = model.Package.get(data_dict.get("id") or "")
    organization_id = data_dict.get("organization_id")
    if package is not None and organization_id == rules.owner_org_before(package):
        organization_id = None  # the circle stays (every package_update says so): no move
    org = model.Group.get(organization_id) if organization_id else None
    if package is not None and org is not None and org.is_organization:
        tk.check_access("package_owner_org_update", context, data_dict)
        upload_route.check_move_quota(package.id, org.id)
    if not context.get("defer_commit"):
        return original(context, data_dict)
    with _commits_deferred():
        return original(context, data_dict)


@contextlib.contextmanager
def _commits_deferred() -> Iterator[None]:
    """Within ``package_update`` and ``package_create`` (``defer_commit``), CKAN 2.11's
    package_owner_org_update saves each earlier membership of the dataset in a circle
    with ``Member.save()``, which commits the whole session: on a dataset that ever
    changed circle, every update was committed before the IPackageController hooks ran,
    and the write rules (``rules.keep_records``) compared the request with itself. Here
    a commit only flushes; the caller commits as it meant to."""
    session = model.Session()  # this thread's session, which Member.save() commits
    session.commit = session.flush  # type: ignore[method-assign]
    try:
        yield
    finally:
        del session.commit
