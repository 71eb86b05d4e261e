"""Typed access to the extension's configuration (declared in config_declaration.yaml).

CKAN validates every value at start-up with the validators in
``logic/validators.py``; the functions here only read and convert.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import ckan.plugins.toolkit as tk

from .storage.s3 import MAX_OBJECT_SIZE, MiB, ObjectStore, S3Settings


def s3_settings() -> S3Settings | None:
    """The object store settings, or None when no S3 endpoint is configured."""
    endpoint = tk.config.get("dcor_object_store.endpoint_url")
    if not endpoint:
        return None
    return S3Settings(
        endpoint_url=endpoint,
        public_endpoint_url=tk.config.get("dcor_object_store.public_endpoint_url") or None,
        access_key_id=tk.config["dcor_object_store.access_key_id"],
        secret_access_key=tk.config["dcor_object_store.secret_access_key"],
        ssl_verify=_ssl_verify(tk.config["dcor_object_store.ssl_verify"]),
        bucket_name_template=tk.config["dcor_object_store.bucket_name"],
        abort_incomplete_multipart_days=int(
            tk.config["dcor_object_store.abort_incomplete_multipart_days"]
        ),
        part_size=int(tk.config["dcor_object_store.part_size_mib"]) * MiB,
        upload_concurrency=int(tk.config["dcor_object_store.upload_concurrency"]),
        copy_object_max=int(tk.config["dcor_object_store.copy_object_max_mib"]) * MiB,
        upload_access_key_id=tk.config.get("dcor_object_store.upload_access_key_id") or None,
        upload_secret_access_key=tk.config.get("dcor_object_store.upload_secret_access_key")
        or None,
        staging_bucket=tk.config["dcor_object_store.staging_bucket"],
    )


def as_bool(value: object) -> bool | None:
    """A setting's true or false, or None when it is neither (the validators say so)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    return None


def _ssl_verify(value: object) -> bool | str:
    """True, False, or the CA bundle's path (checked once, at start-up, by the validator)."""
    flag = as_bool(value)
    return str(value).strip() if flag is None else flag


def object_store() -> ObjectStore | None:
    """The process-wide object store client, or None when S3 is off."""
    settings = s3_settings()
    return None if settings is None else _object_store_for(settings)


@functools.lru_cache(maxsize=4)
def _object_store_for(settings: S3Settings) -> ObjectStore:
    return ObjectStore(settings)


def depots_path() -> Path:
    return Path(tk.config["ckanext.dcor_depot.depots_path"])


def users_depot_name() -> str:
    return tk.config.get("ckanext.dcor_depot.users_depot_name") or f"users-{socket.gethostname()}"


def tmp_dir() -> Path:
    return Path(tk.config["ckanext.dcor_depot.tmp_dir"])


def local_backup_location() -> Path | None:
    location = tk.config.get("dcor_object_store.local_backup_location")
    return Path(location) if location else None


def job_timeout(queue: str) -> int:
    """Seconds a job on one of the depot's queues may run (dcor-converge, -short, -normal;
    dcor-index takes dcor-converge's)."""
    name = queue.removeprefix("dcor-")
    return int(
        tk.config[f"ckanext.dcor_depot.job_timeout_{'converge' if name == 'index' else name}"]
    )


def longest_job_timeout() -> int:
    """Seconds the longest job may run (``ckanext.dcor_depot.job_timeout_normal``)."""
    return int(tk.config["ckanext.dcor_depot.job_timeout_normal"])


def lease_seconds() -> float:
    """Seconds a lease in Redis lives without renewal (``leases.py``)."""
    return float(tk.config["ckanext.dcor_depot.lease_seconds"])


def line_check_seconds() -> int:
    """Seconds between two looks of a converging worker at the circles' lines."""
    return int(tk.config["ckanext.dcor_depot.line_check_seconds"])


def figshare_api_url() -> str:
    return tk.config["ckanext.dcor_depot.figshare_api_url"]


def upload_url_expiry() -> int:
    """Seconds for which the URLs of ``dcor_depot_upload_urls`` are valid."""
    return int(tk.config["ckanext.dcor_depot.upload_url_expiry"])


def circle_quota() -> int | None:
    """Bytes a circle may hold (recorded files and pending uploads), or None: no limit."""
    gib = int(tk.config["ckanext.dcor_depot.circle_quota_gib"])
    return gib * 1024**3 if gib else None


def upload_max_size() -> int:
    """The largest file, in bytes, for which an upload is granted (0 GiB: S3's limit)."""
    gib = int(tk.config["ckanext.dcor_depot.upload_max_gib"])
    return min(gib * 1024**3, MAX_OBJECT_SIZE) if gib else MAX_OBJECT_SIZE


def upload_max_pending() -> int:
    """How many uploads one user may have granted and not registered at a time."""
    return int(tk.config["ckanext.dcor_depot.upload_max_pending"])


def download_url_expiry() -> int:
    """Seconds for which the presigned S3 URL of a private file's download is valid."""
    return int(tk.config["ckanext.dcor_depot.download_url_expiry_private"])


def purge_retention_days() -> int:
    """Days for which the files of purged datasets and resources are kept, unreadable."""
    return int(tk.config["ckanext.dcor_depot.purge_retention_days"])


def dcoraid_resource_suffixes() -> list[str]:
    """The file name suffixes DCOR-Aid's file dialog offers (plugin dcor_depot_dcoraid)."""
    return tk.config["ckanext.dcor_depot.dcoraid_resource_suffixes"].split()
