"""The API that DCOR-Aid (PyPI ``dcoraid``), DCOR's own client, speaks: the plugin
``dcor_depot_dcoraid`` (``plugin.py``) adds it.

- ``resource_upload_s3_urls`` (GET, ``organization_id``, ``file_size``): a new resource id
  and bare URLs for DCOR-Aid's layout of the file (``ceil(size / 1 GiB)`` parts of equal
  size; one PUT, and no ``complete_url``, for a file of up to 1 GiB). They write the
  upload staging area only, signed by the upload identity, like those of
  ``dcor_depot_upload_urls``, with the same limits and quotas; the grant belongs to the
  circle and to the user who asked, and is bound to the dataset it is registered in.
- The registration as DCOR-Aid sends it (``package_revise`` with
  ``update__resources__extend: [{id, name, s3_available}]``, no ``url_type``) is checked
  like any other (``rules.py``, ``rules.register``).
- ``package_create`` without ``name`` gets one made from the title; ``state: draft``
  is kept for the creator (CKAN drops it for users who are not sysadmins).
- ``supported_resource_suffixes`` and ``resource_schema_supplements`` answer what its
  upload dialog asks.
"""

from __future__ import annotations

import secrets
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib.munge import munge_title_to_name
from ckan.types import Context, DataDict

from .. import config
from . import upload_route

__all__ = [
    "package_create",
    "resource_schema_supplements",
    "resource_upload_s3_urls",
    "supported_resource_suffixes",
]

#: DCOR-Aid's part size: a file goes in ceil(size / 1 GiB) parts of equal size.
PART = 1024**3


def layout(size: int) -> int:
    """The part size DCOR-Aid computes for a file of ``size`` bytes (its
    ``compute_upload_part_parameters``): the whole file when it has one part."""
    parts = -(-size // PART)
    return -(-size // parts)


@tk.side_effect_free
def resource_upload_s3_urls(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """URLs to upload one file of ``file_size`` bytes for a dataset of the circle
    ``organization_id``, as DCOR-Aid asks for them: ``{upload_urls, complete_url,
    resource_id}``. Allowed to whoever may create datasets in the circle. Register the
    file with ``package_revise`` (``update__resources__extend`` with ``id`` and
    ``name``) in a dataset of that circle, as the same user, before the URLs expire
    (``ckanext.dcor_depot.upload_url_expiry``)."""
    _refuse_browser_sessions()
    organization_id = data_dict.get("organization_id")
    org = model.Group.get(organization_id) if isinstance(organization_id, str) else None
    if org is None or not org.is_organization or org.state != "active":
        # the same answer as for a circle the user may not use: ids cannot be probed
        raise tk.NotAuthorized("You may not create datasets in this circle")
    tk.check_access("package_create", context, {"owner_org": org.id})
    size = _positive_int(data_dict.get("file_size"))
    user = model.User.get(context.get("user") or "")
    resource_id, upload = upload_route.issue_circle_upload_urls(
        org.id, size, user.id if user else None, layout(size)
    )
    if upload.upload_id is None:
        return {"upload_urls": [upload.url], "complete_url": None, "resource_id": resource_id}
    return {
        "upload_urls": [url for _, url in upload.part_urls],
        "complete_url": upload.complete_url,
        "resource_id": resource_id,
    }


def _refuse_browser_sessions() -> None:
    """A GET that grants an upload (it counts against the user's and the circle's limits)
    is answered for an API token only: another site cannot make a browser that is
    logged in here ask for it (a plain GET is no cross-site request CKAN checks)."""
    try:
        # CKAN sets it when an API token identified the user (and for anonymous users,
        # whom the permission check refuses); a cookie with a token CKAN did not take is
        # a browser's session
        via_token = bool(tk.g.get("login_via_auth_header"))
        tk.request.environ["__no_cache__"] = True  # one user's URLs, for nobody else
    except (RuntimeError, TypeError, AttributeError):
        return  # not in a request: called by code of this site
    if not via_token:
        raise tk.NotAuthorized(
            "resource_upload_s3_urls takes an API token (the Authorization header), "
            "not a browser's session"
        )


def _positive_int(value: Any) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(value).strip() != str(size):
        raise tk.ValidationError(
            {"file_size": [f"file_size is {value!r}: give the file's size in bytes (1 or more)"]}
        )
    return size


@tk.chained_action
def package_create(original, context: Context, data_dict: DataDict):
    """CKAN's package_create; without ``name``, one is made from the title and a random
    suffix (DCOR-Aid sends none); ``state: draft`` is kept for the creator."""
    if not data_dict.get("name"):
        base = munge_title_to_name(str(data_dict.get("title") or "dataset"))[:80].strip("-")
        data_dict = {**data_dict, "name": f"{base or 'dataset'}-{secrets.token_hex(4)}"}
    if data_dict.get("state") != "draft" or context.get("allow_state_change"):
        return original(context, data_dict)
    context["allow_state_change"] = True  # CKAN keeps the state then; only a draft
    try:
        return original(context, data_dict)
    finally:
        context.pop("allow_state_change", None)  # not for what the caller does next


@tk.side_effect_free
def supported_resource_suffixes(context: Context, data_dict: DataDict) -> list[str]:
    """The file name suffixes this site takes for resources (DCOR-Aid's file dialog):
    ``ckanext.dcor_depot.dcoraid_resource_suffixes``."""
    return config.dcoraid_resource_suffixes()


@tk.side_effect_free
def resource_schema_supplements(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Supplementary resource schemas (DCOR-Aid's upload dialog): this site has none."""
    return {}
