"""Auth functions of the extension's actions (same names as the actions)."""

from __future__ import annotations

import ckan.plugins.toolkit as tk
from ckan.types import AuthResult, Context, DataDict


def dcor_depot_upload_urls(context: Context, data_dict: DataDict) -> AuthResult:
    """Only who may add resources to the dataset may upload a file for it.

    A dataset that does not exist gets the same answer as one the user may
    not change: the names of private datasets cannot be probed.
    """
    try:
        tk.check_access("resource_create", context, {"package_id": data_dict.get("package_id")})
    except (tk.NotAuthorized, tk.ObjectNotFound):
        return {
            "success": False,
            "msg": f"User {context.get('user') or '(anonymous)'} may not add files to this dataset",
        }
    return {"success": True}
