"""Input schemas of the extension's actions."""

from __future__ import annotations

import ckan.plugins.toolkit as tk
from ckan.types import Schema

from .validators import (
    dcor_depot_file_name,
    dcor_depot_file_size,
    dcor_depot_md5,
    dcor_depot_resource_id,
)


def upload_urls() -> Schema:
    """``dcor_depot_upload_urls``: the dataset, the file's name and size, its MD5 if known."""
    get = tk.get_validator
    return {
        "package_id": [get("not_empty"), get("unicode_safe"), get("package_id_or_name_exists")],
        "name": [get("not_empty"), get("unicode_safe"), dcor_depot_file_name],
        "size": [get("not_empty"), get("int_validator"), dcor_depot_file_size],
        "md5": [get("ignore_missing"), get("unicode_safe"), dcor_depot_md5],
    }


def resume_upload_urls() -> Schema:
    """``dcor_depot_upload_urls`` for a pending upload: the dataset and the resource id."""
    get = tk.get_validator
    return {
        "package_id": [get("not_empty"), get("unicode_safe"), get("package_id_or_name_exists")],
        "resource_id": [get("not_empty"), get("unicode_safe"), dcor_depot_resource_id],
    }
