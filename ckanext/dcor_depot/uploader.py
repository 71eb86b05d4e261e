"""CKAN's legacy resource uploader, taught that a depot symlink is a valid path.

CKAN refuses a resource path whose real path differs from it (a guard against
path tricks), so after the symlink job CKAN could neither serve the file nor
update the resource. :class:`DepotResourceUpload` accepts exactly one kind of
symlink: one whose target lies inside the configured depots folder.
"""

from __future__ import annotations

import os

import ckan.plugins.toolkit as tk
from ckan.lib.uploader import ResourceUpload

from . import config


class DepotResourceUpload(ResourceUpload):
    def get_path(self, id: str) -> str:
        filepath = os.path.join(self.get_directory(id), id[6:])
        real = os.path.realpath(filepath)
        if real != filepath:
            depots = os.path.realpath(config.depots_path())
            if os.path.commonpath([depots, real]) != depots:
                raise tk.ValidationError({"upload": ["Invalid storage path"]})
        return filepath


def legacy_storage_in_use() -> bool:
    """False when CKAN 2.12's file-keeper storage handles resource files instead."""
    try:
        from ckan.lib import files
    except ImportError:  # CKAN 2.11
        return True
    try:
        files.get_storage(tk.config["ckan.files.default_storages.resource"])
    except files.exc.UnknownStorageError:
        return True
    return False
