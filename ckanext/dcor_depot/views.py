"""Downloads of files that live in S3: CKAN's download URL redirects to the object.

A public file (public, active dataset) redirects to the object's own URL,
which the bucket policy answers only while the object is tagged public: the
download stops working the moment the dataset is private and converged. Until
its convergence has tagged it, the download answers 503 with Retry-After: no
presigned URL, which would outlive a switch to private, is ever given for a
public file, to anybody. A private file redirects to a presigned GET valid for
``ckanext.dcor_depot.download_url_expiry_private`` seconds, after CKAN's
permission check.

The rules repeat CKAN's own download URLs of the ``dataset`` type; CKAN
registers plugin blueprints first, so these win. A resource whose file is
still on CKAN's block storage is served by CKAN's view as before.
"""

from __future__ import annotations

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.common import current_user
from ckan.lib import signals
from ckan.views.resource import download as ckan_download
from flask import Blueprint, make_response

from . import config, errors, placement, resource_fields
from .operations import health as depot_health
from .storage.s3 import S3Error

dcor_depot = Blueprint("dcor_depot", __name__)


def download(id: str, resource_id: str, filename: str | None = None):
    store = config.object_store()
    stored = model.Resource.get(resource_id)
    if store is None or stored is None or stored.url_type not in resource_fields.FILE_URL_TYPES:
        return ckan_download("dataset", id, resource_id, filename)
    try:
        placed = placement.file_of(store, stored.package_id, resource_id)
    except errors.JobError:
        return ckan_download("dataset", id, resource_id, filename)
    if placed.url_type == "upload" and (placed.recorded is None or _local_file(placed)):
        return ckan_download("dataset", id, resource_id, filename)
    # the database's rows, not the search index's copy of the dataset (CKAN 2.11's bulk
    # actions change privacy with SQL and index afterwards)
    context = {"user": current_user.name, "auth_user_obj": current_user, "use_cache": False}
    try:
        resource = tk.get_action("resource_show")(dict(context), {"id": resource_id})
        package = tk.get_action("package_show")(dict(context), {"id": id})
    except tk.ObjectNotFound:
        return tk.abort(404, tk._("Resource not found"))
    except tk.NotAuthorized:
        return tk.abort(403, tk._("Not authorized to download resource"))
    if resource["package_id"] != package["id"] or placed.location is None:
        return tk.abort(404, tk._("Resource not found"))
    refused = resource.get(resource_fields.S3_UPLOAD_ERROR_FIELD)
    if refused or placed.recorded is None:  # a file nobody gets until it is verified
        return tk.abort(
            409,
            refused or "The file is still being verified after its upload; try again later",
        )
    try:
        # a public file: its own URL, which stops working once the dataset is private
        # (the object's tag goes); never a presigned URL, which would outlive a switch to
        # private: until its convergence has tagged it, "try again shortly". A private
        # file: a short presigned URL, after CKAN's check
        # public or not as CKAN's check saw the dataset, not as it was read before it
        # (a switch meanwhile must not give a stranger a presigned URL)
        if placement.is_public(package, resource, placed):
            if not store.visibility(*placed.recorded):
                return _being_published()
            url = placement.s3_url(store, placed.recorded)
        else:
            # a presigned URL is made here without the store: ask it first, so that
            # a store that cannot be reached gets CKAN's 503, not a broken redirect
            if store.object_info(*placed.recorded) is None:
                return tk.abort(404, tk._("The file's object is missing from the object store"))
            url = store.presigned_get_url(
                *placed.recorded,
                expires_in=config.download_url_expiry(),
                filename=resource_fields.download_name(resource),
                content_type=resource.get("mimetype") or None,
            )
    except S3Error:
        return tk.abort(503, tk._("The object store cannot be reached; try again later"))
    signals.resource_download.send(resource_id)
    return tk.redirect_to(url)


#: Seconds after which a client may ask again for a file that is being published.
PUBLISHING_RETRY_AFTER = 5


def _being_published():
    """503 with Retry-After: the file is public, its object not tagged public yet."""
    response = make_response(tk._("The file is being published; try again in a few seconds"), 503)
    response.headers["Retry-After"] = str(PUBLISHING_RETRY_AFTER)
    return response


def _local_file(placed: placement.PlacedFile) -> bool:
    """CKAN still has the uploaded file on block storage (it serves it itself)."""
    return placed.local is not None and placed.local.is_file()


def _sysadmins_only() -> None:
    try:
        tk.check_access("sysadmin", {"user": current_user.name, "auth_user_obj": current_user})
    except tk.NotAuthorized:
        tk.abort(403, tk._("Only sysadmins may see the depot's health"))


def health():
    """The depot health page, a tab of CKAN's sysadmin pages."""
    _sysadmins_only()
    return tk.render("dcor_depot/health.html", {"health": depot_health.health()})


def health_list(name: str):
    """The resources behind one number of the health page."""
    _sysadmins_only()
    titles = {**depot_health.LISTS, **depot_health.AUDIT_LISTS}
    if name not in titles:
        return tk.abort(404, tk._("There is no such list"))
    circle = tk.request.args.get("circle") or None
    try:
        page = int(tk.request.args.get("page", 1))
    except ValueError:
        page = 0
    if page < 1:
        return tk.abort(400, tk._("page must be a whole number from 1 on"))
    entries, total = depot_health.listing(name, circle, page)
    first = (page - 1) * depot_health.PAGE_SIZE
    return tk.render(
        "dcor_depot/health_list.html",
        {
            "name": name,
            "title": titles[name],
            "circle": circle,
            "entries": entries,
            "total": total,
            "page": page,
            "first": first + 1,
            "last": first + len(entries),
            "more": first + len(entries) < total,
        },
    )


dcor_depot.add_url_rule("/ckan-admin/depot", view_func=health)
dcor_depot.add_url_rule("/ckan-admin/depot/<name>", view_func=health_list)
dcor_depot.add_url_rule("/dataset/<id>/resource/<resource_id>/download", view_func=download)
dcor_depot.add_url_rule(
    "/dataset/<id>/resource/<resource_id>/download/<filename>", view_func=download
)
