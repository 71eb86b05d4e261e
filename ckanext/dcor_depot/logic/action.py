"""The extension's actions: the direct-to-S3 upload route, and CKAN's bulk
visibility actions chained so that the objects follow."""

from __future__ import annotations

from typing import Any

import ckan.plugins.toolkit as tk
from ckan.types import Context, DataDict

from ..jobs import queue
from . import schema, upload_route

__all__ = [
    "dcor_depot_upload_urls",
    "bulk_update_private",
    "bulk_update_public",
    "bulk_update_delete",
]


def dcor_depot_upload_urls(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Authorize an upload of one file straight into the dataset's circle bucket.

    The URLs write only the new resource's object, only once, only with the
    given size, and expire after ``ckanext.dcor_depot.upload_url_expiry``
    seconds. Register the upload afterwards with ``resource_create`` and the
    answer's ``register.data``.

    :param package_id: id or name of the dataset
    :param name: the file's name, e.g. ``cells.rtdc``
    :param size: the file's size in bytes
    :param md5: (optional) the file's MD5 as hex: a single PUT of other bytes is
        refused, a multipart upload is checked after registration
    :returns: ``resource_id``, ``expires``, ``upload`` (``method`` ``PUT`` with
        ``url`` and ``headers``, or ``multipart`` with ``upload_id``,
        ``part_size``, ``parts`` and the ``complete`` and ``abort`` URLs) and
        ``register``
    """
    data, errors = tk.navl_validate(data_dict, schema.upload_urls(), context)
    if errors:
        raise tk.ValidationError(errors)
    tk.check_access("dcor_depot_upload_urls", context, data)
    return upload_route.issue_upload_urls(
        data["package_id"], data["name"], data["size"], data.get("md5")
    )


def _queue_visibility_after(name: str):
    """CKAN 2.11's bulk actions change datasets with SQL, past every hook."""

    @tk.chained_action
    def action(original, context, data_dict):
        result = original(context, data_dict)
        for package_id in data_dict.get("datasets", []):
            queue.queue_or_log(queue.enqueue_visibility, package_id)
        return result

    action.__name__ = name
    return action


bulk_update_private = _queue_visibility_after("bulk_update_private")
bulk_update_public = _queue_visibility_after("bulk_update_public")
bulk_update_delete = _queue_visibility_after("bulk_update_delete")
