"""The dcor_depot plugin: CKAN's view of where the files of DCOR live.

Data flow: a CKAN event reaches a hook here, the hook queues jobs
(``jobs/queue.py``), the jobs move files with the storage layer
(``storage/depot.py``, ``storage/s3.py``). The hooks only queue: no S3
call, no hashing in the request.
"""

from __future__ import annotations

import logging
from typing import Any

import ckan.plugins as p
import ckan.plugins.toolkit as tk
import redis.exceptions

from . import config
from .jobs import queue
from .jobs.site import JOB_CONTEXT_KEY
from .uploader import DepotResourceUpload, legacy_storage_in_use

log = logging.getLogger(__name__)

_REDIS_DOWN = (
    "dcor_depot: could not queue the jobs of %s %s (%s); the upload itself succeeded. "
    "`ckan run-jobs-dcor-depot` will catch up"
)


@tk.blanket.config_declarations
@tk.blanket.validators
@tk.blanket.cli
class DCORDepotPlugin(p.SingletonPlugin):
    p.implements(p.IConfigurable, inherit=True)
    p.implements(p.IResourceController, inherit=True)
    p.implements(p.IPackageController, inherit=True)
    p.implements(p.IUploader, inherit=True)

    # IConfigurable
    def configure(self, config_):
        settings = config.s3_settings()
        if settings is None:
            log.warning(
                "dcor_depot: dcor_object_store.endpoint_url is not set: "
                "S3 features (uploads, visibility, presigned downloads) are off"
            )
        else:
            log.info("dcor_depot: object store at %s", settings.endpoint_url)

    # IResourceController
    def after_resource_create(self, context, resource: dict[str, Any]) -> None:
        if context.get(JOB_CONTEXT_KEY) or resource.get("url_type") != "upload":
            return
        try:
            queue.enqueue_resource_jobs(resource)
        except redis.exceptions.RedisError as exc:
            log.warning(_REDIS_DOWN, "resource", resource["id"], exc)

    def after_resource_delete(self, context, resources: list[dict[str, Any]]) -> None:
        if resources and not context.get(JOB_CONTEXT_KEY):
            self._queue_visibility(resources[0]["package_id"])

    # IPackageController
    def after_dataset_update(self, context, pkg_dict: dict[str, Any]) -> None:
        # only datasets with objects in S3 can need a visibility change; a
        # file still uploading gets the dataset's visibility from its job
        if not context.get(JOB_CONTEXT_KEY) and any(
            r.get("s3_available") for r in pkg_dict.get("resources", [])
        ):
            self._queue_visibility(pkg_dict["id"])

    def after_dataset_delete(self, context, pkg_dict: dict[str, Any]) -> None:
        if not context.get(JOB_CONTEXT_KEY):
            self._queue_visibility(pkg_dict["id"])

    @staticmethod
    def _queue_visibility(package_id: str) -> None:
        try:
            queue.enqueue_visibility(package_id)
        except redis.exceptions.RedisError as exc:
            log.warning(_REDIS_DOWN, "dataset", package_id, exc)

    # IUploader
    def get_resource_uploader(self, data_dict: dict[str, Any]):
        return DepotResourceUpload(data_dict) if legacy_storage_in_use() else None

    def get_uploader(self, upload_to: str, old_filename: str | None = None):
        return None
