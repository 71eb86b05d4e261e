"""Downloads of files that live in S3: CKAN's download URL redirects to a presigned GET.

The rules repeat CKAN's own download URLs of the ``dataset`` type; CKAN
registers plugin blueprints first, so these win. A resource whose file is
still on CKAN's block storage is served by CKAN's view as before.
"""

from __future__ import annotations

import posixpath

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.common import current_user
from ckan.lib import signals
from ckan.views.resource import download as ckan_download
from flask import Blueprint

from . import config, placement, records
from .storage.s3 import S3Error

dcor_depot = Blueprint("dcor_depot", __name__)


def download(id: str, resource_id: str, filename: str | None = None):
    store = config.object_store()
    stored = model.Resource.get(resource_id)
    if store is None or stored is None or not _file_in_s3(stored):
        return ckan_download("dataset", id, resource_id, filename)
    context = {"user": current_user.name, "auth_user_obj": current_user}
    try:
        resource = tk.get_action("resource_show")(context, {"id": resource_id})
        package = tk.get_action("package_show")(context, {"id": id})
    except tk.ObjectNotFound:
        return tk.abort(404, tk._("Resource not found"))
    except tk.NotAuthorized:
        return tk.abort(403, tk._("Not authorized to download resource"))
    if resource["package_id"] != package["id"] or not package.get("owner_org"):
        return tk.abort(404, tk._("Resource not found"))
    if placement.awaits_verification(resource):
        refused = resource.get(records.S3_UPLOAD_ERROR_FIELD)
        return tk.abort(
            409,
            refused or "The file is still being verified after its upload; try again later",
        )
    public = placement.is_public(package, resource)
    try:
        url = store.presigned_get_url(
            *placement.object_location(store, package["owner_org"], resource_id),
            expires_in=config.download_url_expiry(public),
            filename=download_name(resource),
            content_type=resource.get("mimetype") or None,
        )
    except S3Error:
        return tk.abort(503, tk._("The object store cannot be reached; try again later"))
    signals.resource_download.send(resource_id)
    return tk.redirect_to(url)


def _file_in_s3(resource: model.Resource) -> bool:
    """A file that went straight to S3, or an upload whose local file is gone after migration."""
    if resource.url_type == records.S3_URL_TYPE:
        return True
    if resource.url_type != "upload" or not resource.extras.get("s3_available"):
        return False
    try:
        return not placement.ckan_path(resource.id).is_file()
    except records.JobError:
        return True


def download_name(resource: dict) -> str:
    """The file name a download gets: the uploaded file's, else the resource's name."""
    if resource.get("url_type") == "upload":
        name = posixpath.basename(resource.get("url") or "")
    else:
        name = resource.get("name") or ""
    return name or resource["id"]


dcor_depot.add_url_rule("/dataset/<id>/resource/<resource_id>/download", view_func=download)
dcor_depot.add_url_rule(
    "/dataset/<id>/resource/<resource_id>/download/<filename>", view_func=download
)
