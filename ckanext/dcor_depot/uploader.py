"""CKAN's legacy resource uploader, taught that a depot symlink is a valid path.

CKAN refuses a resource path whose real path differs from it (a guard against
path tricks), so after the symlink job CKAN could neither serve the file nor
update the resource. :class:`DepotResourceUpload` accepts exactly one kind of
symlink: one whose target lies inside the configured depots folder.
"""

from __future__ import annotations

import contextlib
import os

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa
from ckan.exceptions import CkanConfigurationException
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
        holds a file (a new file would overwrite the depot copy through the
        symlink, and clearing would delete the link to it), or whose file does not
        fit into its circle's quota. A new file is recorded (``records.record_file``)
        in CKAN's transaction: its bytes count against the quota whatever CKAN
        does with the resource's row, until the file is pruned."""
        if self.storage_path and (self.filename or self.clear):
            from . import guard, records

            filepath = self.get_path(id)
            before = guard.committed_resources([id]).get(id)
            if os.path.lexists(filepath) or (before is not None and before["has_file"]):
                name = (before or {}).get("url") or os.path.basename(filepath)
                raise tk.ValidationError(
                    {"upload": [guard.REPLACE_REFUSED.format(id=id, name=name)]}
                )
            if self.filename and before is None and not records.WRITING.get():
                guard.refuse_new_file_id(id)
            if self.filename:
                self._arrives(id)
        super().upload(id, max_size)
        if self.storage_path and self.filename:
            # this request wrote it: removed again if its transaction rolls back
            model.Session().info.setdefault(_UPLOADED, {})[id] = self.get_path(id)
            from .jobs import resource_jobs

            resource = model.Session.get(model.Resource, id)
            # the extension's own writes run their jobs themselves
            if resource is not None and not records.WRITING.get():
                resource_jobs.file_arrived(resource, registered=False)

    def _arrives(self, resource_id: str) -> None:
        """Check the new file against its circle's quota, and record it (the resource's
        row is in CKAN's session, not committed: CKAN 2.12 uploads before its
        ``IPackageController.edit``, 2.11's ``resource_create`` after)."""
        from . import grants, records
        from .logic import upload_route

        resource = model.Session.get(model.Resource, resource_id)
        package = resource.package if resource is not None else None
        if package is None:
            return
        if package.owner_org:
            grants.lock_circle(package.owner_org)
            upload_route.check_quota(package, self.filesize, "upload", resource_id)
        records.record_file(package.id, resource_id, False, self.filesize, package.owner_org)


_UPLOADED = "dcor_depot_uploaded_files"


def _uploads_committed(session) -> None:
    if not session.in_nested_transaction():  # not a savepoint: the files stay
        session.info.pop(_UPLOADED, None)


def _uploads_rolled_back(session) -> None:
    """Remove the files this transaction wrote (CKAN writes an upload before the rules
    that may refuse it run): a refused request leaves nothing on the disk that no quota
    counts and no prune removes."""
    if session.in_nested_transaction():
        return
    for path in session.info.pop(_UPLOADED, {}).values():
        with contextlib.suppress(FileNotFoundError):
            if not os.path.islink(path):
                os.remove(path)


if not sa.event.contains(model.Session, "after_rollback", _uploads_rolled_back):
    sa.event.listen(model.Session, "after_commit", _uploads_committed)
    sa.event.listen(model.Session, "after_rollback", _uploads_rolled_back)


def uploaded_here(resource_id: str) -> bool:
    """This request (CKAN's database session) wrote the resource's file at CKAN's path:
    a file found there that it did not write was stored under the id before."""
    return resource_id in model.Session().info.get(_UPLOADED, ())


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
