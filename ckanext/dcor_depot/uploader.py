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

    def upload(self, id: str, max_size: int = 10) -> None:
        """CKAN's upload, refused before it touches the disk for a resource that
        holds a file: a new file would overwrite the depot copy through the
        symlink, and clearing would delete the link to it."""
        if self.storage_path and (self.filename or self.clear):
            from . import guard

            filepath = self.get_path(id)
            before = guard.committed_resources([id]).get(id)
            if os.path.lexists(filepath) or (before is not None and before["has_file"]):
                name = (before or {}).get("url") or os.path.basename(filepath)
                raise tk.ValidationError(
                    {"upload": [guard.REPLACE_REFUSED.format(id=id, name=name)]}
                )
        super().upload(id, max_size)


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
