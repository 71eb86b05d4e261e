"""Job (queue dcor-normal): record the metadata of a DC (.rtdc) file on its resource."""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

from .. import config, errors, placement, resource_fields
from ..dc_file import read_dc_fields
from ..model import ckan_rows
from ..resource_fields import DC_ERROR_FIELD
from . import index

log = logging.getLogger(__name__)


def record_dc_metadata(resource_id: str) -> str:
    """Set ``dc:<section>:<key>`` and ``format`` on the resource.

    A file dclab cannot read is reported in :data:`DC_ERROR_FIELD` and the
    log; the job then succeeds, so nothing waits on a broken file.
    """
    resource = ckan_rows.show_resource(resource_id)
    if not resource_fields.is_dc_file(resource):
        return f"resource {resource_id}: not a DC file"
    if resource.get("url_type") == resource_fields.S3_URL_TYPE:
        where, fields, problem = _read_from_s3(resource)
    else:
        where = placement.ckan_path(resource_id)
        fields, problem = read_dc_fields(where)
    index.patch_resource(resource_id, fields)
    if problem:
        log.error("resource %s (%s): %s", resource_id, where, problem)
        return f"resource {resource_id}: {problem}"
    return f"resource {resource_id}: {len(fields)} fields recorded, format {fields['format']}"


def _read_from_s3(resource: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """Read the metadata of a file that is only in S3, by range requests (not all of it)."""
    store = config.object_store()
    if store is None:
        raise errors.JobError("The file is in S3, but dcor_object_store.endpoint_url is not set")
    package = ckan_rows.dataset_names(resource["package_id"])
    placed = placement.file_of(store, package.id, resource["id"])
    location = placed.require_location(package.name)
    url = store.presigned_get_url(*location, expires_in=3600, internal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dclab's HTTP warnings quote the URL, a credential
        fields, problem = read_dc_fields(url, store.settings.ssl_verify)
    where = str(location)
    if problem:  # the presigned URL is a credential: it never reaches a log or a field
        problem = without_credentials(problem, url, where)
        fields = {DC_ERROR_FIELD: problem}
    return where, fields, problem


#: The query of a presigned URL, however an HTTP library quotes it (alone, escaped).
_SIGNED_QUERY = re.compile(r"\?[^\s'\"<>]*X-Amz-[^\s'\"<>]*", re.IGNORECASE)


def without_credentials(message: str, url: str, where: str) -> str:
    """``message`` with the presigned ``url`` named by ``where`` and any signed query cut."""
    return _SIGNED_QUERY.sub("?<signed query removed>", message.replace(url, where))
