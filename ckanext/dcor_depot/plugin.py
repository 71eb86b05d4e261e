"""The dcor_depot plugin: CKAN's view of where the files of DCOR live.

Data flow: a CKAN event reaches a hook here, the hook queues jobs
(``jobs/queue.py``) once CKAN has committed, the jobs move files with the
storage layer (``storage/depot.py``, ``storage/s3/``). The hooks only
queue: no hashing in the request; when a direct-to-S3 upload is registered,
one HEAD of the staged object and its server-side copy into the circle bucket,
whose answer names the copy's ETag (``logic/upload_route.py``,
``storage/s3/staging.py``). The write rules live in ``logic/rules.py``, actions and
auth functions in ``logic/``, the download view in ``views.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import ckan.model as model
import ckan.plugins as p
import ckan.plugins.toolkit as tk

from . import config, resource_fields, subscriptions
from .logic import dcoraid, rules
from .uploader import DepotResourceUpload, refuse_file_storages

log = logging.getLogger(__name__)


@tk.blanket.actions
@tk.blanket.auth_functions
@tk.blanket.blueprints
@tk.blanket.config_declarations
@tk.blanket.validators
@tk.blanket.cli
class DCORDepotPlugin(p.SingletonPlugin):
    p.implements(p.IConfigurer, inherit=True)
    p.implements(p.IConfigurable, inherit=True)
    p.implements(p.IResourceController, inherit=True)
    p.implements(p.IPackageController, inherit=True)
    p.implements(p.IUploader, inherit=True)
    p.implements(p.IForkObserver, inherit=True)
    p.implements(p.ISignal)

    # IConfigurer: the depot health tab among CKAN's sysadmin pages
    def update_config(self, config_):
        tk.add_template_directory(config_, "templates")

    # IConfigurable
    def configure(self, config_):
        refuse_file_storages()
        settings = config.s3_settings()
        if settings is None:
            log.warning(
                "dcor_depot: dcor_object_store.endpoint_url is not set: "
                "S3 features (uploads, visibility, presigned downloads) are off"
            )
        else:
            log.info("dcor_depot: object store at %s", settings.endpoint_url)

    # IForkObserver
    def before_fork(self) -> None:
        # the worker's work horses inherit a ready S3 client (0.1 s per job otherwise)
        config.object_store()

    # ISignal: the CKAN actions after which a dataset's objects converge, and those that
    # queue the jobs of the files they add
    def get_signal_subscriptions(self):
        return subscriptions.get_subscriptions()

    # IResourceController
    def before_resource_update(self, context, current, resource: dict[str, Any]) -> None:
        if not context.get(resource_fields.JOB_CONTEXT_KEY):
            rules.refuse_replacing(current, resource)

    # IPackageController
    def create(self, entity: model.Package) -> None:
        rules.keep_records(entity, created=True)

    def edit(self, entity: model.Package) -> None:
        rules.keep_records(entity)

    # IUploader
    def get_resource_uploader(self, data_dict: dict[str, Any]):
        return DepotResourceUpload(data_dict)

    def get_uploader(self, upload_to: str, old_filename: str | None = None):
        return None


class DcorAidPlugin(p.SingletonPlugin):
    """DCOR-Aid's protocol (``logic/dcoraid.py``): enable it by name, ``dcor_depot_dcoraid``,
    after ``dcor_depot``."""

    p.implements(p.IConfigurable)
    p.implements(p.IActions)

    def configure(self, config_) -> None:
        if not p.plugin_loaded("dcor_depot"):
            raise RuntimeError(
                "ckan.plugins: dcor_depot_dcoraid needs dcor_depot; add it before it"
            )

    def get_actions(self) -> dict[str, Any]:
        actions = {name: getattr(dcoraid, name) for name in dcoraid.__all__}
        settings = config.s3_settings()
        if settings is None or settings.upload_access_key_id is None:
            # no uploads straight to S3 here: DCOR-Aid finds the action missing and sends
            # the file through CKAN (package_revise), whose jobs move it as any upload
            del actions["resource_upload_s3_urls"]
        return actions
