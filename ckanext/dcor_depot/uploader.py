"""CKAN's legacy resource uploader, taught that a depot symlink is a valid path.

CKAN refuses a resource path whose real path differs from it (a guard against
path tricks), so after the symlink job CKAN could neither serve the file nor
update the resource. :class:`DepotResourceUpload` takes CKAN's path from
``placement.ckan_path``, which accepts exactly one kind of symlink: one whose
target lies inside the configured depots folder. What may be uploaded is
decided by the write rules (``logic/rules.py``).
"""

from __future__ import annotations

import ckan.plugins.toolkit as tk
from ckan.exceptions import CkanConfigurationException
from ckan.lib.uploader import ResourceUpload

from . import placement
from .errors import JobError
from .logic import rules


class DepotResourceUpload(ResourceUpload):
    def get_path(self, id: str) -> str:
        try:
            return str(placement.ckan_path(id))
        except JobError:
            raise tk.ValidationError({"upload": ["Invalid storage path"]}) from None

    def upload(self, id: str, max_size: int = 10) -> None:
        """CKAN's upload, after the write rules (``logic/rules.py``) allowed it, before
        it touches the disk: a resource that holds a file keeps it, a new file fits
        into its circle's quota and is recorded; then its jobs are queued."""
        if self.storage_path and (self.filename or self.clear):
            rules.refuse_upload(id, self.get_path(id), self.filesize if self.filename else None)
        super().upload(id, max_size)
        if self.storage_path and self.filename:
            rules.file_uploaded(id, self.get_path(id))


def refuse_file_storages() -> None:
    """Stop CKAN when CKAN 2.12's file storages would take the resource files.

    The depot's jobs find, move and upload a resource's file at its legacy
    path under ``ckan.storage_path``; a file handed to a storage would never
    reach the depot or S3 (every job would fail with "does not exist").
    """
    try:
        from ckan.lib import files
    except ImportError:  # CKAN 2.11: no file storages
        return
    name = tk.config["ckan.files.default_storages.resource"]
    try:
        files.get_storage(name)
    except files.exc.UnknownStorageError:
        return
    default = tk.config["ckan.files.default_storages.default"]
    own = any(key.startswith(f"ckan.files.storage.{name}.") for key in tk.config)
    # CKAN derives the resources' storage from the default storage when it has none
    options = f"ckan.files.storage.{name if own else default}.*"
    raise CkanConfigurationException(
        f"dcor_depot: {options} gives resource files to CKAN's file storage '{name}' "
        "(ckan.files.default_storages.resource), which dcor_depot does not support: its "
        "jobs move resource files from ckan.storage_path into the depot and to S3. "
        f"Remove the {options} options and set ckan.storage_path. To keep file storages "
        "for user, group and admin images, configure each by its own name "
        "(ckan.files.storage.<name>.*, the names in ckan.files.default_storages.user, "
        ".group and .admin), not as the default storage, from which CKAN derives one for "
        "resources. Large files go straight to S3 through the dcor_depot_upload_urls action."
    )
