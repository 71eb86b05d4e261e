"""The jobs of a resource's file, in order, and queueing them when a file arrives.

The S3 upload waits for the symlink job and the DC metadata job for the
upload (RQ dependencies that also resolve when the job waited for fails: one
broken step never blocks the others for good).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import config, records
from .backup import backup_resource
from .checksum import record_object_sha256
from .dc_metadata import record_dc_metadata
from .queue import NORMAL, SHORT, enqueue
from .symlink import symlink_resource
from .upload import upload_resource

#: The jobs of a resource's file by kind (the kind names the job id); each
#: takes the resource id. A file uploaded to CKAN gets the first three, in
#: this order; one uploaded straight to S3 the last three.
RESOURCE_JOBS: dict[str, Callable[[str], str]] = {
    "symlink": symlink_resource,
    "s3-upload": upload_resource,
    "dc-metadata": record_dc_metadata,
    "s3-sha256": record_object_sha256,
    "backup": backup_resource,
}


def enqueue_resource_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The jobs of a newly uploaded file: symlink, S3 upload, DC metadata."""
    rid = resource["id"]
    last = enqueue(RESOURCE_JOBS["symlink"], "symlink", rid, SHORT)
    jobs = [last]
    if config.s3_settings() is not None:
        last = enqueue(RESOURCE_JOBS["s3-upload"], "s3-upload", rid, NORMAL, depends_on=last)
        jobs.append(last)
    if records.is_dc_file(resource):
        dc = enqueue(RESOURCE_JOBS["dc-metadata"], "dc-metadata", rid, NORMAL, depends_on=last)
        jobs.append(dc)
    return jobs


def enqueue_registered_jobs(resource: Mapping[str, Any]) -> list[str]:
    """The jobs of a file uploaded straight to S3: SHA-256 and visibility, DC metadata, backup."""
    rid = resource["id"]
    checksum = enqueue(RESOURCE_JOBS["s3-sha256"], "s3-sha256", rid, NORMAL)
    jobs = [checksum]
    if records.is_dc_file(resource):
        jobs.append(enqueue(RESOURCE_JOBS["dc-metadata"], "dc-metadata", rid, NORMAL))
    if config.local_backup_location() is not None:
        jobs.append(
            enqueue(RESOURCE_JOBS["backup"], "backup", rid, NORMAL, checksum, allow_failure=False)
        )
    return jobs
